"""``/api/v1.0/pxcodes/``: list and search, fetch, and (admins) create, replace, edit, delete."""

from flask import current_app, request
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import Conflict, PreconditionFailed

from .. import readcache
from ..auth import admin_required
from ..db import db
from ..http.args import reject_unknown_args
from ..http.conditional import (
    RenderedCache,
    cached_json_or_304,
    etag_of,
    json_or_304,
    json_with_etag,
    not_modified,
    require_if_match,
)
from ..http.pagination import ARGS as PAGE_ARGS
from ..http.pagination import PageArgs, render_page
from ..http.payload import json_object
from ..limits import per_user
from ..models import DataVersion, PxCode
from ..queries import Pager, PxCodeListing
from ..readcache import allow_replay, wrote
from ..readcache.depends import ByTag, Matching, Window
from . import bp

PAGE_CACHES = "starter_pxcode_pages"
PAGE_DEPENDS = "starter_pxcode_page_depends"


@bp.record_once
def _add_page_caches(state):
    # Each app its own: counts, page keys and rendered pages of its own database.
    state.app.extensions[PAGE_CACHES] = (Pager(still_current=readcache.still_current), RenderedCache())
    state.app.extensions[PAGE_DEPENDS] = ByTag()


def page_caches(app=None):
    """Return ``(pager, rendered_pages)`` of ``app`` (default: the current app)."""
    return (app or current_app).extensions[PAGE_CACHES]


@bp.get("/pxcodes/")
@per_user
def list_pxcodes():
    reject_unknown_args(PAGE_ARGS | PxCodeListing.ARGS)
    listing, args = PxCodeListing.from_request(), PageArgs.from_request()
    versions = DataVersion.current()
    version = versions.codes
    # The body holds absolute links, so the whole URL (host, arguments) is in the tag.
    tag = etag_of(version, request.url)
    pager, rendered_pages = page_caches()
    depends = current_app.extensions[PAGE_DEPENDS]
    render = lambda: _render(pager, listing, args, version, tag, depends)  # noqa: E731
    note_depends = lambda: rendered_pages.get_or_render(tag, render)  # noqa: E731  (renders once per tag)
    earlier = readcache.held_tag_still_current(depends, tag, versions, note_depends)
    if earlier is not None:
        made_at, depends_on, earlier_tag = earlier
        allow_replay(made_at, depends_on=depends_on)
        return not_modified(earlier_tag)
    response = cached_json_or_304(tag, render, rendered_pages)
    if response.status_code == 304 and depends.get(tag) is None and readcache.of(current_app) is not None:
        # Once per tag (the rendered pages): what it depends on, so the kept 304 outlives
        # writes that leave it current.
        note_depends()
    allow_replay(version, depends_on=depends.get(tag))  # unknown: the whole table
    return response


def _render(pager, listing, args, version, tag, depends):
    listing, page = pager.search(listing, args, version)
    # A filter's page depends on the codes it selects alone, unless the words found nothing
    # or were corrected: the corrections depend on every title. A page of every code, on its
    # rows and the total.
    if not listing.is_filtered:
        order = listing.sort.lstrip("-")
        depends.note(tag, version, Window.of(
            page.items, order == "procedure", listing.descending, args.per_page, page.total, request.url
        ))
    elif not listing.fuzzy and (page.total or not listing.words):
        depends.note(tag, version, Matching(listing.words, listing.prefix))
    body, headers = render_page(page, PxCode.serializer())
    body["meta"].update(listing.meta())
    return body, headers


@bp.get("/pxcodes/<pxcode>")
@per_user
def get_pxcode(pxcode):
    reject_unknown_args(())
    version = DataVersion.current().codes  # read before the row: a replay is never newer than its data
    code = PxCode.get_or_404(pxcode)
    allow_replay(version, depends_on=code.pxcode)  # writes to other codes leave it current
    return json_or_304(code.etag, code.to_dict)


@bp.post("/pxcodes/")
@per_user
@admin_required
def create_pxcode():
    code = PxCode.from_dict(json_object())
    # The answer is built from what is written, before the commit: after it, reading the
    # (expired) row again could fail and turn a stored write into a 503.
    body, etag = code.to_dict(), code.etag
    db.session.add(code)
    wrote(code.pxcode, None, code.procedure)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict(f"pxcode {body['pxcode']!r} already exists") from None
    return json_with_etag(etag, body, 201, {"Location": body["url"]})


@bp.put("/pxcodes/<pxcode>")
@per_user
@admin_required
def replace_pxcode(pxcode):
    return _change(pxcode, partial=False)


@bp.patch("/pxcodes/<pxcode>")
@per_user
@admin_required
def edit_pxcode(pxcode):
    return _change(pxcode, partial=True)


@bp.delete("/pxcodes/<pxcode>")
@per_user
@admin_required
def delete_pxcode(pxcode):
    code = PxCode.get_or_404(pxcode)
    require_if_match(code.etag)
    _apply_if_unchanged(delete(PxCode), code)
    return "", 204


def _change(pxcode, partial):
    code = PxCode.get_or_404(pxcode)
    require_if_match(code.etag)
    changes = code.changes_from(json_object(), partial)
    # The answer is what the write stores, built before the commit: no query after it,
    # so a 503 always means "not written".
    written = PxCode(pxcode=code.pxcode, procedure=changes.get("procedure", code.procedure))
    if changes:
        _apply_if_unchanged(update(PxCode).values(**changes), code, written.procedure)
    return json_with_etag(written.etag, written.to_dict())


def _apply_if_unchanged(statement, code, procedure=None):
    """Run a write only if the row still holds what the client's ETag was checked against.

    The check and the write are one statement, so two editors holding the same
    ETag cannot both succeed: the second gets 412. ``procedure``: the title it leaves (None: a delete).
    """
    wrote(code.pxcode, code.procedure, procedure)
    result = db.session.execute(
        statement.where(PxCode.id == code.id, PxCode.procedure == code.procedure)
    )
    if result.rowcount != 1:
        db.session.rollback()
        raise PreconditionFailed("the item changed meanwhile: fetch it again")
    db.session.commit()
