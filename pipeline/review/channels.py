"""Channel files: what ``pipeline export OUT DEST --profile shopify|google|amazon`` writes beside
the images, for the shop or marketplace to import as it is.

- ``shopify`` → ``DEST/shopify.csv``, a product CSV: ``Handle``, ``Image Src``, ``Image
  Position``, ``Image Alt Text``; one row per image, a product's rows together, by position.
- ``google`` → ``DEST/google.tsv``, a supplemental feed, one row per product: ``id``,
  ``image_link`` (its first image), ``additional_image_link`` (the others, comma-separated, at
  most ``GOOGLE_MAX_ADDITIONAL``).
- ``amazon`` → ``DEST/amazon.tsv``, one row per product: ``sku``, ``main_image_url``,
  ``other_image_url1`` to ``8``.

**Products.** A job's ``group`` (its id when it has none) is its product; the jobs of one
product are exported together. A product's images are ordered by position: a job's image keeps
its source row's ``Image Position`` when every delivered job of the product has one (so a
Shopify product's images keep their places, gaps and all, when one is left out), else the
jobs' order in the manifest; a job's other variants (``--all-variants``) come after them. The
Google id and the Amazon sku come from ``--feed-id`` (a template over the product's first row,
by the manifest's rules: ``{Variant SKU}``), by default that row's job id; the alt text from
``--alt-text`` (a template over the image's row), by default its ``Image Alt Text`` cell.

**Checks enforced.** Each profile enforces its channel's marketplace checks (Amazon's are the
main-image rules, applied to every image of its file): an image that fails is not copied, is
left out of the file, and is listed with its reasons. With ``--fit`` (amazon), an image that
re-framing on white alone fixes is delivered as the fitted copy instead (``images.fit``). A
product left with no image (all rejected, failed, or failing the checks) is listed too.

**URLs.** ``--base-url`` + the file's name in DEST. Without it, a bucket DEST gives its public
URL form: ``s3://b/k`` → ``https://b.s3.amazonaws.com/k``; ``gs://b/k`` →
``https://storage.googleapis.com/b/k``; ``az://c/k`` →
``https://<account>.blob.core.windows.net/c/k``, the account from
``AZURE_STORAGE_ACCOUNT_NAME``. Those URLs serve only if the objects are public: making them so
is the user's decision, never export's. A folder DEST, or an S3-compatible endpoint
(``AWS_ENDPOINT_URL``), needs ``--base-url``.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote

from pipeline.config import http_url_problem
from pipeline.errors import ExportError
from pipeline.images.checks import Channel, ImageChecks
from pipeline.images.fit import FIT_MAX_UPSCALE, FitOutcome, fit_for_amazon
from pipeline.review.export import (
    CREATOR_TOOL,
    DEFAULT_NAME,
    Delivered,
    ExportPlan,
    ExportResult,
    Target,
    deliver,
    dest_fs,
    plan_delivery,
    write_if_changed,
)
from pipeline.review.rows import (
    ALT_TEXT_COLUMN,
    POSITION_COLUMN,
    ManifestRows,
    fill,
    template_columns,
)


class Profile(StrEnum):
    SHOPIFY = "shopify"
    GOOGLE = "google"
    AMAZON = "amazon"


CHANNEL_OF = {
    Profile.SHOPIFY: Channel.SHOPIFY,
    Profile.GOOGLE: Channel.GOOGLE,
    Profile.AMAZON: Channel.AMAZON,
}
FILE_NAMES = {
    Profile.SHOPIFY: "shopify.csv",
    Profile.GOOGLE: "google.tsv",
    Profile.AMAZON: "amazon.tsv",
}
SHOPIFY_COLUMNS = ("Handle", "Image Src", "Image Position", "Image Alt Text")
GOOGLE_COLUMNS = ("id", "image_link", "additional_image_link")
GOOGLE_MAX_ADDITIONAL = 10  # Merchant Center reads at most 10 additional images
AMAZON_MAX_OTHER = 8  # the inventory file's other_image_url1..8
AMAZON_COLUMNS = (
    "sku",
    "main_image_url",
    *(f"other_image_url{i}" for i in range(1, AMAZON_MAX_OTHER + 1)),
)
S3_SCHEMES = frozenset({"s3", "s3a"})
GCS_SCHEMES = frozenset({"gs", "gcs"})
AZURE_SCHEMES = frozenset({"az", "abfs", "abfss"})
AZURE_ACCOUNT_ENV = "AZURE_STORAGE_ACCOUNT_NAME"
S3_ENDPOINT_ENV = "AWS_ENDPOINT_URL"
SHOWN_JOBS = 5  # jobs named in one product's line of what was left out


@dataclass(frozen=True)
class ChannelOptions:
    """``--profile`` and the options that shape its file."""

    profile: Profile
    base_url: str | None = None
    fit: bool = False  # amazon: re-frame on white what that alone fixes
    alt_text: str | None = None  # a template over the image's row
    feed_id: str | None = None  # a template over the product's first row (google id, sku)
    max_upscale: float = FIT_MAX_UPSCALE

    @property
    def channel(self) -> Channel:
        return CHANNEL_OF[self.profile]

    @property
    def file_name(self) -> str:
        return FILE_NAMES[self.profile]

    def row_columns(self) -> frozenset[str]:
        """The cells of the manifest's rows this profile reads."""
        named = template_columns(self.alt_text) | template_columns(self.feed_id)
        return named | {POSITION_COLUMN, ALT_TEXT_COLUMN}


def export_channel(
    out_dir: Path,
    dest: str,
    options: ChannelOptions,
    template: str = DEFAULT_NAME,
    approved_only: bool = False,
    fmt: str | None = None,
    quality: int | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    all_variants: bool = False,
    manifest: Path | None = None,
) -> ExportResult:
    """``export`` for a channel: the images its checks let through, export.csv, and its file.

    Everything that can be refused (options, names, URLs) is refused before a file is copied.
    """
    if options.fit and options.profile is not Profile.AMAZON:
        raise ExportError(
            "--fit re-frames for Amazon's main-image rules: use it with --profile amazon"
        )
    plan = plan_delivery(
        out_dir,
        template,
        approved_only,
        fmt,
        one_image=True,
        all_variants=all_variants,
        row_columns=options.row_columns(),
        manifest=manifest,
    )
    fs, root = dest_fs(dest)
    channel = ChannelFile(options, url_maker(dest, root, options))
    channel.check_templates(plan)
    result, delivered = deliver(plan, fs, root, dest, fmt, quality, progress, channel)
    data = channel.render(plan, delivered, result)
    write_if_changed(fs, f"{root.rstrip('/')}/{options.file_name}", data)
    if plan.rows.note:
        result.skipped.append(f"{plan.rows.note}: positions in job order, no alt text from rows")
    return result


# -- URLs ------------------------------------------------------------------------------------------


def url_maker(dest: str, root: str, options: ChannelOptions) -> Callable[[str], str]:
    """The public URL of a file named ``name`` in DEST (see the module's docstring)."""
    if options.base_url is not None:
        if problem := http_url_problem(options.base_url):
            raise ExportError(f"--base-url: {problem}")
        base = options.base_url if options.base_url.endswith("/") else options.base_url + "/"
        return lambda name: base + quote(name)
    scheme = dest.split("://", 1)[0].lower() if "://" in dest else ""
    bucket, _, prefix = root.strip("/").partition("/")

    def key(name: str) -> str:
        return quote(f"{prefix}/{name}" if prefix else name)

    if scheme in S3_SCHEMES and not os.environ.get(S3_ENDPOINT_ENV):
        return lambda name: f"https://{bucket}.s3.amazonaws.com/{key(name)}"
    if scheme in GCS_SCHEMES:
        return lambda name: f"https://storage.googleapis.com/{bucket}/{key(name)}"
    account = os.environ.get(AZURE_ACCOUNT_ENV)
    if scheme in AZURE_SCHEMES and account:
        return lambda name: f"https://{account}.blob.core.windows.net/{bucket}/{key(name)}"
    why = {
        "s3": f"an S3-compatible endpoint ({S3_ENDPOINT_ENV}) has no public URL form known here",
        "az": f"the storage account is not known ({AZURE_ACCOUNT_ENV} is not set)",
    }.get("s3" if scheme in S3_SCHEMES else "az" if scheme in AZURE_SCHEMES else "")
    reason = why or "its files are not served from a URL export can know"
    raise ExportError(
        f"--profile {options.profile} writes the images' URLs, but DEST {dest}: {reason}; "
        "pass --base-url, the URL DEST's files will be served from"
    )


# -- the channel's file ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Placed:
    """An image of the channel file."""

    target: Target
    url: str
    position: int


@dataclass
class Product:
    group: str
    rank: tuple[float, int]  # its first job's place in the manifest, then in the ledger
    images: list[Placed] = field(default_factory=list)


class ChannelFile:
    """Decides each image (``admit``, an ``export.Gate``), then writes the channel's file."""

    def __init__(self, options: ChannelOptions, url: Callable[[str], str]) -> None:
        self.options = options
        self._url = url
        self._left_out: list[str] = []
        self._reasons: dict[str, str] = {}  # job id -> why its images were left out
        self.fitted = 0

    def check_templates(self, plan: ExportPlan) -> None:
        """Fill ``--alt-text`` and ``--feed-id`` for every image planned, before any is copied:
        a placeholder naming no column is an error then, not halfway through."""
        for target in plan.targets:
            if self.options.profile is Profile.SHOPIFY:
                self._alt_text(target, 0, plan.rows)
            elif target.main:
                self._feed_id(target, plan.rows)

    def admit(
        self, target: Target, data: bytes, checks: ImageChecks
    ) -> tuple[bytes, ImageChecks] | None:
        channel = self.options.channel
        if checks.passes(channel):
            return data, checks
        if self.options.fit:
            fitted = fit_for_amazon(
                data, checks, creator_tool=CREATOR_TOOL, max_upscale=self.options.max_upscale
            )
            if fitted.outcome is FitOutcome.FITTED and fitted.data and fitted.checks:
                self.fitted += 1
                return fitted.data, fitted.checks
            reason = f"--fit cannot fix it: {fitted.reason}"
        else:
            reasons = "; ".join(failure.reason for failure in checks.failures(channel))
            reason = f"fails {channel.value}'s checks: {reasons}"
        self._reasons.setdefault(target.job_id, f"fails {channel.value}'s checks")
        self._left_out.append(f"{target.job_id} image {target.index}: {reason}")
        return None

    def render(self, plan: ExportPlan, delivered: list[Delivered], result: ExportResult) -> bytes:
        """The file's bytes; what was left out goes to ``result.left_out``."""
        products = self._products(plan.rows, delivered)
        writer = {
            Profile.SHOPIFY: self._shopify,
            Profile.GOOGLE: self._google,
            Profile.AMAZON: self._amazon,
        }[self.options.profile]
        data = writer(products, plan.rows)
        placed_groups = {product.group for product in products}
        result.channel_file = self.options.file_name
        result.products = len(products)
        result.placed = sum(len(product.images) for product in products)
        result.fitted = self.fitted
        products_left_out = self._products_left_out(plan, placed_groups)
        result.left_out = self._left_out + products_left_out
        result.products_left_out = len(products_left_out)
        return data

    def _products(self, rows: ManifestRows, delivered: list[Delivered]) -> list[Product]:
        by_group: dict[str, Product] = {}
        for item in delivered:
            target = item.target
            rank = (float(rows.order.get(target.job_id, math.inf)), target.order)
            product = by_group.setdefault(target.group, Product(target.group, rank))
            product.rank = min(product.rank, rank)
            product.images.append(Placed(target, self._url(target.name), 0))
        products = sorted(by_group.values(), key=lambda product: product.rank)
        for product in products:
            product.images = placed_in_order(product.images, rows)
        return products

    def _products_left_out(self, plan: ExportPlan, placed: set[str]) -> list[str]:
        lines = []
        for group, jobs in plan.members.items():
            if group in placed:
                continue
            why = {job: plan.excluded.get(job) or self._reasons.get(job, "") for job in jobs}
            if all(reason == "rejected" for reason in why.values()):
                summary = "every image was rejected"
            else:
                shown = [f"{job}: {reason}" for job, reason in why.items() if reason][:SHOWN_JOBS]
                more = len(why) - len(shown)
                summary = "; ".join(shown) + (f" and {more} more" if more > 0 else "")
            lines.append(f"product {group}: left out of {self.options.file_name}: {summary}")
        return lines

    # -- the three formats ------------------------------------------------------------------

    def _shopify(self, products: list[Product], rows: ManifestRows) -> bytes:
        lines: list[list[object]] = [list(SHOPIFY_COLUMNS)]
        for product in products:
            for image in product.images:
                target = image.target
                alt = self._alt_text(target, image.position, rows)
                lines.append([product.group, image.url, image.position, alt])
        return _table(lines, ",")

    def _google(self, products: list[Product], rows: ManifestRows) -> bytes:
        lines: list[list[object]] = [list(GOOGLE_COLUMNS)]
        for product in products:
            first, *others = product.images
            kept = self._capped(product, others, GOOGLE_MAX_ADDITIONAL)
            additional = ",".join(image.url for image in kept)
            lines.append([self._feed_id(first.target, rows), first.url, additional])
        return _table(lines, "\t")

    def _amazon(self, products: list[Product], rows: ManifestRows) -> bytes:
        lines: list[list[object]] = [list(AMAZON_COLUMNS)]
        for product in products:
            first, *others = product.images
            kept = [image.url for image in self._capped(product, others, AMAZON_MAX_OTHER)]
            padding = [""] * (AMAZON_MAX_OTHER - len(kept))
            lines.append([self._feed_id(first.target, rows), first.url, *kept, *padding])
        return _table(lines, "\t")

    def _capped(self, product: Product, images: list[Placed], limit: int) -> list[Placed]:
        for image in images[limit:]:
            target = image.target
            reason = f"product {product.group} has more than {limit + 1} images"
            self._left_out.append(f"{target.job_id} image {target.index}: {reason}")
        return images[:limit]

    def _feed_id(self, target: Target, rows: ManifestRows) -> str:
        """The product's id in the feed, from its first image's job and row."""
        if self.options.feed_id is None:
            return target.job_id
        fields = {"id": target.job_id, "group": target.group}
        what = f"--feed-id for product {target.group} (job {target.job_id})"
        return fill(self.options.feed_id, rows.row(target.job_id), fields, what)

    def _alt_text(self, target: Target, position: int, rows: ManifestRows) -> str:
        row = rows.row(target.job_id)
        if self.options.alt_text is None:
            return row.get(ALT_TEXT_COLUMN, "")
        fields = {
            "id": target.job_id,
            "group": target.group,
            "index": str(target.index),
            "position": str(position),
        }
        return fill(self.options.alt_text, row, fields, f"--alt-text for job {target.job_id}")


def placed_in_order(images: list[Placed], rows: ManifestRows) -> list[Placed]:
    """A product's images with their positions, in position order (the module's rules)."""

    def job_rank(target: Target) -> tuple[float, int, int]:
        return (float(rows.order.get(target.job_id, math.inf)), target.order, target.index)

    mains = sorted(
        (image for image in images if image.target.main), key=lambda i: job_rank(i.target)
    )
    from_rows = [_whole(rows.row(image.target.job_id).get(POSITION_COLUMN)) for image in mains]
    usable = None not in from_rows and len(set(from_rows)) == len(from_rows)
    numbers = [p for p in from_rows if p is not None] if usable else list(range(1, len(mains) + 1))
    placed = [Placed(i.target, i.url, n) for i, n in zip(mains, numbers, strict=True)]
    after = max(numbers, default=0)
    others = sorted((i for i in images if not i.target.main), key=lambda i: job_rank(i.target))
    placed += [Placed(i.target, i.url, after + n) for n, i in enumerate(others, start=1)]
    return sorted(placed, key=lambda image: image.position)


def _whole(cell: str | None) -> int | None:
    text = (cell or "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def _table(lines: Iterable[list[object]], delimiter: str) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\n").writerows(lines)
    return buffer.getvalue().encode("utf-8")


def channel_options(
    profile: str | None,
    *,
    base_url: str | None = None,
    fit: bool = False,
    alt_text: str | None = None,
    feed_id: str | None = None,
) -> ChannelOptions | None:
    """The profile's options (None: no profile), or ``ExportError`` for an option that means
    something only with a profile, or a profile that does not exist."""
    if profile is None:
        given = [
            name
            for name, value in (
                ("--base-url", base_url),
                ("--fit", fit or None),
                ("--alt-text", alt_text),
                ("--feed-id", feed_id),
            )
            if value is not None
        ]
        if given:
            raise ExportError(f"{', '.join(given)} only apply with --profile")
        return None
    try:
        chosen = Profile(profile)
    except ValueError:
        known = ", ".join(Profile)
        raise ExportError(f"--profile {profile!r} is not a channel ({known})") from None
    return ChannelOptions(chosen, base_url, fit, alt_text, feed_id)
