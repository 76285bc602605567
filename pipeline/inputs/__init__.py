"""Inputs from elsewhere: remote inputs (http(s), s3://, gs://, az://) fetched once (``fetch``)
into a content-addressed cache (``cache``), and what an object-store URL names
(``objectstore``). What is uploaded for an input is ``images.upload``'s."""
