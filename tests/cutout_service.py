"""A loopback stand-in of the Legacy Survey cutout service: a real HTTP server on 127.0.0.1 in a thread,
answering ``/cutout.fits`` with FITS images made from real cutouts, and with each fault the real service
(or the network) can produce, chosen per position."""

from __future__ import annotations

import collections
import io
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from astropy.io import fits


def fits_bytes(cutout_hwc: np.ndarray) -> bytes:
    """(H, W, 3) HWC cutout -> the service's answer: a FITS primary image (3, H, W), big-endian float32."""
    buf = io.BytesIO()
    fits.PrimaryHDU(np.ascontiguousarray(cutout_hwc.transpose(2, 0, 1)).astype(">f4")).writeto(buf)
    return buf.getvalue()


class CutoutService:
    """``images``: rounded (ra, dec) -> HWC cutout served as FITS; ``faults``: rounded (ra, dec) -> a
    list of fault names consumed one per request (the last one repeats); positions in neither answer an
    all-zero image, as the real viewer does outside the footprint. Every request is logged."""

    def __init__(self, images: dict, faults: dict | None = None, delay_s: float = 0.0):
        self.images, self.faults, self.delay_s = images, faults or {}, delay_s
        self.requests: list[tuple[float, float, float]] = []  # (ra, dec, time)
        self.lock = threading.Lock()
        self._served = collections.Counter()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                service.answer(self)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/viewer"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def count(self, ra: float, dec: float) -> int:
        return sum(1 for r, d, _ in self.requests if (round(r, 4), round(d, 4)) == (round(ra, 4), round(dec, 4)))

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        parsed = urllib.parse.urlparse(handler.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        if parsed.path != "/viewer/cutout.fits" or {"ra", "dec", "layer", "pixscale", "bands", "size"} - set(query):
            return self._send(handler, 400, b"bad request", "text/plain")
        ra, dec, size = float(query["ra"]), float(query["dec"]), int(query["size"])
        key = (round(ra, 4), round(dec, 4))
        with self.lock:
            self.requests.append((ra, dec, time.monotonic()))
            plan = self.faults.get(key, [])
            fault = plan[min(self._served[key], len(plan) - 1)] if plan else "ok"
            self._served[key] += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        image = self.images.get(key, np.zeros((size, size, 3), np.float32))
        body = fits_bytes(image)
        if fault == "ok":
            return self._send(handler, 200, body, "image/fits")
        if fault == "all_nan_band":
            image = image.copy()
            image[..., 2] = np.nan
            return self._send(handler, 200, fits_bytes(image), "image/fits")
        if fault == "wrong_shape":
            return self._send(handler, 200, fits_bytes(image[:64, :64]), "image/fits")
        if fault == "html":
            return self._send(handler, 200, b"<!DOCTYPE html><html><body>Internal error</body></html>", "text/html")
        if fault == "truncated":  # a short file served whole: Content-Length says what was sent
            return self._send(handler, 200, body[: len(body) // 2], "image/fits")
        if fault == "dropped":  # the connection closes before Content-Length bytes
            handler.send_response(200)
            handler.send_header("Content-Type", "image/fits")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body[:1000])
            handler.close_connection = True
            return
        if fault.startswith("status"):  # status<code>[:<retry-after>]
            code, _, after = fault.removeprefix("status").partition(":")
            return self._send(handler, int(code), b"busy", "text/plain", {"Retry-After": after} if after else {})
        raise AssertionError(f"unknown fault {fault}")

    @staticmethod
    def _send(handler, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(body)
