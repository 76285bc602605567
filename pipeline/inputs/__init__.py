"""Inputs on their way to the API: what the bytes uploaded are (``upload``) and object stores
(``objectstore``). The scheduler calls ``prepare_upload``; preflight uses ``recipe_for``."""
