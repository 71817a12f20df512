"""The review web app (Flask) and a small server around it.

Safety: the server binds to 127.0.0.1 unless another address is asked for (with a
warning); every API call needs the per-session token (writes only in the
``X-Review-Token`` header, so a page from another origin cannot forge one); requests
whose ``Host`` is not the bound address are refused (DNS rebinding); images are
looked up by set name and id in memory, never by a path from the request; request
bodies are checked field by field and refused with a 400 that says what was wrong.
"""

from __future__ import annotations

import csv
import hmac
import io
import ipaddress
import secrets
import threading
import warnings
from collections.abc import Iterable
from importlib import resources
from typing import Any

from flask import Flask, Response, jsonify, request

from replicate._validation import check_choice, fail
from replicate.review.session import LABEL_STATUSES, MAX_PER_PAGE, PAIR_STATUSES, ReviewSession
from replicate.review.store import LABEL_VERDICTS, PAIR_VERDICTS, STAGES

__all__ = ["create_app", "ReviewServer", "start_server", "LOOPBACK_HOSTS"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_BODY = 16 * 1024
_DECIDE_FIELDS = ("kind", "item", "ref_set", "ref_id", "stage", "reviewer", "verdict", "label", "reason")
_UNDO_FIELDS = ("kind", "item", "ref_set", "ref_id", "stage", "reviewer", "reason")
#: keyboard bindings shown in the page (digits relabel to class 0-9)
KEYS = {
    "label": {"a": "accept", "r": "reject", "d": "duplicate", "x": "unusable"},
    "pair": {"d": "duplicate", "s": "distinct"},
}


class BadRequest(ValueError):
    """A request the app refuses with 400."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(
    session: ReviewSession,
    *,
    token: str | None = None,
    reviewer: str = "",
    stage: str = "select",
    allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
) -> Flask:
    """The Flask app over one review session; ``app.config['REVIEW_TOKEN']`` holds the token."""
    stage = check_choice("stage", stage, STAGES)
    token = token or secrets.token_urlsafe(24)
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY, REVIEW_TOKEN=token)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep distance columns in table order
    hosts = {h.strip("[]").lower() for h in allowed_hosts}

    def token_ok(value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(str(value), token)

    def error(status: int, message: str) -> Response:
        resp = jsonify({"error": message, "status": status})
        resp.status_code = status
        return resp

    @app.before_request
    def guard() -> Response | None:
        host = (
            (request.host or "").rsplit(":", 1)[0]
            if not (request.host or "").startswith("[")
            else request.host.split("]")[0]
        )
        host = host.strip("[]").lower()
        if host not in hosts:
            return error(
                403, f"Host == {host!r}; must be one of {sorted(hosts)}. Open the URL the server printed."
            )
        if request.path.startswith("/static/"):
            return None
        if request.method == "POST":
            if not token_ok(request.headers.get("X-Review-Token")):
                return error(403, "X-Review-Token header missing or wrong; writes need the session token.")
            return None
        if request.path == "/" or request.path.startswith("/api/"):
            if not (token_ok(request.headers.get("X-Review-Token")) or token_ok(request.args.get("token"))):
                if request.path == "/":
                    return Response(
                        "<!doctype html><title>replicate review</title><p>This review server needs its session "
                        "token: open the URL that <code>replicate review</code> printed (it ends in "
                        "<code>?token=...</code>).</p>",
                        status=403,
                        mimetype="text/html",
                    )
                return error(
                    403, "token missing or wrong; pass the session token (X-Review-Token header or ?token=)."
                )
        return None

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers.setdefault("Cache-Control", "no-store")
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
        )
        return resp

    @app.errorhandler(BadRequest)
    @app.errorhandler(ValueError)
    @app.errorhandler(TypeError)
    def bad_request(exc: Exception) -> Response:
        return error(400, str(exc))

    @app.errorhandler(KeyError)
    def not_found(exc: KeyError) -> Response:
        return error(404, str(exc.args[0]) if exc.args else "not found")

    @app.errorhandler(LookupError)
    def conflict(exc: LookupError) -> Response:
        return error(409, str(exc))

    @app.errorhandler(413)
    def too_large(exc: Exception) -> Response:
        return error(413, f"request body larger than {MAX_BODY} bytes; send one decision per request.")

    @app.errorhandler(404)
    def no_route(exc: Exception) -> Response:
        return error(404, f"no such endpoint: {request.method} {request.path}")

    @app.errorhandler(405)
    def no_method(exc: Exception) -> Response:
        return error(405, f"method {request.method} not allowed on {request.path}")

    # ------------------------------------------------------------------ helpers

    def arg_int(name: str, default: int | None, lo: int = 0, hi: int | None = None) -> int | None:
        raw = request.args.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BadRequest(f"{name} == {raw!r}; must be an integer.") from None
        if value < lo or (hi is not None and value > hi):
            raise BadRequest(f"{name} == {value}; must be in [{lo}, {hi if hi is not None else 'inf'}].")
        return value

    def arg_bool(name: str, default: bool) -> bool:
        raw = request.args.get(name)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        raise BadRequest(f"{name} == {raw!r}; must be 1 or 0.")

    def body(allowed: tuple[str, ...], required: tuple[str, ...]) -> dict[str, Any]:
        if not request.is_json:
            raise BadRequest(
                f"Content-Type == {request.content_type!r}; must be 'application/json'. Send the decision as JSON."
            )
        try:
            data = request.get_json(silent=True)
        except RecursionError:  # JSON nested thousands deep: the parser gives up
            raise BadRequest("body == JSON nested too deeply; must be a flat JSON object of one decision.") from None
        if not isinstance(data, dict):
            raise BadRequest(
                "body == not a JSON object; must be a JSON object such as "
                '{"kind": "label", "item": "<id>", "verdict": "accept"}.'
            )
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise BadRequest(f"fields == {unknown}; must be among {list(allowed)}.")
        missing = [f for f in required if f not in data]
        if missing:
            raise BadRequest(f"fields == missing {missing}; must include {list(required)}.")
        for f in ("kind", "item", "ref_set", "ref_id", "stage", "reviewer", "verdict"):
            if f in data and data[f] is not None and not isinstance(data[f], str):
                raise BadRequest(f"{f} == {data[f]!r}; must be a string.")
        if (
            "label" in data
            and data["label"] is not None
            and (isinstance(data["label"], bool) or not isinstance(data["label"], (str, int)))
        ):
            raise BadRequest(f"label == {data['label']!r}; must be a class name or index.")
        data.setdefault("reviewer", reviewer)
        data.setdefault("stage", stage)
        data.setdefault("kind", "label")
        data["ref_set"] = data.get("ref_set") or ""
        data["ref_id"] = data.get("ref_id") or ""
        return data

    # ------------------------------------------------------------------ pages

    @app.get("/")
    def index() -> Response:
        page = resources.files("replicate.review").joinpath("static/index.html").read_text(encoding="utf-8")
        return Response(page, mimetype="text/html")

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status=204)

    @app.get("/api/config")
    def config() -> Response:
        q = session.queue
        return jsonify(
            {
                "candidates": q.candidates.name,
                "n_candidates": len(q),
                "n_pairs": q.n_pairs,
                "class_names": list(q.class_names),
                "keywords": q.keyword_counts(),
                "stages": list(STAGES),
                "label_verdicts": list(LABEL_VERDICTS),
                "pair_verdicts": list(PAIR_VERDICTS),
                "label_statuses": list(LABEL_STATUSES),
                "pair_statuses": list(PAIR_STATUSES),
                "distance_columns": list(q.distance_columns),
                "reviewer": reviewer,
                "stage": stage,
                "keys": KEYS,
                "max_per_page": MAX_PER_PAGE,
                "log": str(session.store.path),
            }
        )

    @app.get("/api/labels")
    def labels() -> Response:
        return jsonify(
            session.label_page(
                request.args.get("stage", stage),
                class_name=request.args.get("class") or None,
                keyword=request.args.get("keyword") or None,
                status=request.args.get("status") or None,
                page=arg_int("page", None),
                per_page=arg_int("per_page", 100, 1, MAX_PER_PAGE) or 100,
                images=arg_bool("images", True),
                scale=arg_int("scale", 1, 1, 8) or 1,
            )
        )

    @app.get("/api/pairs")
    def pairs() -> Response:
        return jsonify(
            session.pair_page(
                request.args.get("stage", stage),
                status=request.args.get("status") or None,
                page=arg_int("page", None),
                per_page=arg_int("per_page", 20, 1, MAX_PER_PAGE) or 20,
                images=arg_bool("images", True),
                scale=arg_int("scale", 1, 1, 8) or 1,
            )
        )

    @app.get("/api/image")
    def image() -> Response:
        from replicate.review.queue import encode_png

        set_name = request.args.get("set") or session.queue.candidates.name
        item_id = request.args.get("id")
        if not item_id:
            raise BadRequest("id == missing; must be the id of an image (e.g. ?id=cifar10-test/00001).")
        if set_name not in session.queue.sets:
            raise KeyError(f"set == {set_name!r}; must be one of {sorted(session.queue.sets)}.")
        img = session.queue.image(set_name, item_id)
        if img is None:
            raise KeyError(f"id == {item_id!r}; must be the id of an image in {set_name!r}.")
        scale = arg_int("scale", 1, 1, 8) or 1
        resp = Response(encode_png(img, scale), mimetype="image/png")
        resp.headers["Cache-Control"] = "private, max-age=3600"
        return resp

    @app.get("/api/progress")
    def progress() -> Response:
        return jsonify(session.progress(request.args.get("stage", stage)))

    @app.post("/api/decide")
    def decide() -> Response:
        data = body(_DECIDE_FIELDS, ("item", "verdict"))
        fields: dict[str, Any] = {k: data.get(k) for k in _DECIDE_FIELDS if k in data}
        event = session.decide(**fields)
        resp = jsonify({"event": event.to_dict(), "progress": session.progress(event.stage)})
        resp.status_code = 201
        return resp

    @app.post("/api/undo")
    def undo() -> Response:
        data = body(_UNDO_FIELDS, ())
        fields: dict[str, Any] = {k: data.get(k) for k in _UNDO_FIELDS if k in data}
        event = session.undo(**fields)
        if event is None:
            raise LookupError(
                f"undo == nothing to undo for reviewer {data['reviewer']!r} in stage {data['stage']!r}"
                + (f" on item {data['item']!r}" if data.get("item") else "")
                + "; must follow a decision."
            )
        resp = jsonify({"event": event.to_dict(), "progress": session.progress(event.stage)})
        resp.status_code = 201
        return resp

    @app.get("/api/decisions")
    def decisions() -> Response:
        since = arg_int("since", 0) or 0
        return jsonify({"events": [e.to_dict() for e in session.store.events(since)]})

    @app.get("/api/agreement")
    def agreement() -> Response:
        from replicate.review.export import agreement as kappa

        res = kappa(
            session.store.path,
            request.args.get("a", "select"),
            request.args.get("b", "verify"),
            by=request.args.get("by", "stage"),  # type: ignore[arg-type]
            kind=request.args.get("kind", "label"),  # type: ignore[arg-type]
        )
        return jsonify({**res.to_dict(), "summary": res.summary()})

    @app.get("/api/export/blacklist")
    def export_blacklist() -> Response:
        from replicate.review.export import blacklist

        ids = blacklist(session.store.path)
        return Response(
            "".join(f"{x}\n" for x in ids),
            mimetype="text/plain",
            headers={"Content-Disposition": "attachment; filename=blacklist.txt"},
        )

    @app.get("/api/export/verdicts")
    def export_verdicts() -> Response:
        from replicate.review.export import verdicts

        kind = request.args.get("kind", "label")
        df = verdicts(session.store.path, kind)  # type: ignore[arg-type]
        buf = io.StringIO()
        df.to_csv(buf, index=False, quoting=csv.QUOTE_MINIMAL)
        return Response(
            buf.getvalue(),
            mimetype="text/csv",
            headers={"Content-Disposition": f"attachment; filename=verdicts-{kind}.csv"},
        )

    return app


class ReviewServer:
    """A running review server (werkzeug, threaded) in a background thread."""

    def __init__(self, app: Flask, host: str, port: int) -> None:
        from werkzeug.serving import make_server

        self.app = app
        self._server = make_server(host, port, app, threaded=True)
        self.host = host
        self.port = int(self._server.server_port)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page URL, token included."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/?token={self.app.config['REVIEW_TOKEN']}"

    @property
    def base(self) -> str:
        """``http://host:port`` without the token."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ReviewServer:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="replicate-review", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted."""
        self._server.serve_forever()

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ReviewServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def start_server(
    session: ReviewSession,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    reviewer: str = "",
    stage: str = "select",
    token: str | None = None,
    background: bool = True,
) -> ReviewServer:
    """Create the app and bind it; ``port=0`` picks a free port.

    Binding to anything but a loopback address makes the review reachable from
    other machines: it is allowed only when asked for, and warns.
    """
    if not isinstance(host, str) or not host:
        raise fail("host", host, "an address such as '127.0.0.1'")
    allowed = list(LOOPBACK_HOSTS)
    if not _is_loopback(host):
        warnings.warn(
            f"replicate review is binding to {host!r}, reachable from other machines; anyone who "
            "has the URL with its token can write decisions. Use 127.0.0.1 unless you need this.",
            UserWarning,
            stacklevel=2,
        )
        allowed.append(host)
        if host in ("0.0.0.0", "::"):
            import socket

            allowed += [socket.gethostname(), socket.getfqdn()]
            try:
                allowed.append(socket.gethostbyname(socket.gethostname()))
            except OSError:  # pragma: no cover - no resolvable host name
                pass
    app = create_app(session, token=token, reviewer=reviewer, stage=stage, allowed_hosts=allowed)
    server = ReviewServer(app, host, port)
    return server.start() if background else server
