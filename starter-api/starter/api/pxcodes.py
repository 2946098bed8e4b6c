"""``/api/v1.0/pxcodes/``: list, fetch and create procedure codes."""

from flask import request
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import BadRequest, Conflict

from ..db import db
from ..http.conditional import conditional_json, etag_of, tagged_json
from ..http.pagination import PageArgs, page_body, paginate
from ..http.payload import json_object
from ..models import PxCode, ValidationError
from . import bp


@bp.get("/pxcodes/")
def list_pxcodes():
    page = paginate(PxCode.ordered(), PageArgs.from_request())
    # The body holds absolute links, so the URL (host and arguments) is part of the tag.
    tag = etag_of(request.url, page.total, [c.etag for c in page.items])
    return conditional_json(tag, lambda: page_body(page, PxCode.to_dict))


@bp.get("/pxcodes/<pxcode>")
def get_pxcode(pxcode):
    code = PxCode.get_or_404(pxcode)
    return conditional_json(code.etag, code.to_dict)


@bp.post("/pxcodes/")
def create_pxcode():
    try:
        code = PxCode.from_dict(json_object())
    except ValidationError as exc:
        raise BadRequest(str(exc)) from None
    db.session.add(code)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict(f"pxcode {code.pxcode!r} already exists") from None
    body = code.to_dict()
    return tagged_json(code.etag, body, 201, {"Location": body["url"]})
