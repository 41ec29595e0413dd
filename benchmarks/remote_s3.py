"""Save and restore N MiB on a local S3 server (moto) vs s3fs put_file/get_file of the same bytes.

    python benchmarks/remote_s3.py [MiB, default 1024]

Starts moto's server on a free 127.0.0.1 port (stopped at the end), then times
``save_state_dict``/``load_state_dict`` of one tensor per 64 MiB against s3fs's
``put_file``/``get_file`` of a local file of the same size. Target: within 1.3x.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time

import s3fs
import torch
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

import torchckpt


def main(mib: int) -> None:
    httpd = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app),
                        threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{httpd.server_address[1]}",
                      AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")
    try:
        fs = s3fs.S3FileSystem()
        fs.mkdir("bench")
        n = mib << 20
        sd = {f"t{i}": torch.randn(min(64 << 20, n - i * (64 << 20)) // 4)
              for i in range(-(-n // (64 << 20)))}
        with tempfile.TemporaryDirectory() as tmp:
            raw = os.path.join(tmp, "raw")
            with open(raw, "wb") as f:
                for t in sd.values():
                    f.write(t.numpy().tobytes())
            t0 = time.perf_counter()
            fs.put_file(raw, "s3://bench/raw")
            t1 = time.perf_counter()
            fs.get_file("s3://bench/raw", raw + ".back")
            t2 = time.perf_counter()
        torchckpt.save_state_dict(sd, "s3://bench/sd")
        t3 = time.perf_counter()
        back = torchckpt.load_state_dict("s3://bench/sd")
        t4 = time.perf_counter()
        assert all(torch.equal(back[k], v) for k, v in sd.items())
        put, get, save, load = t1 - t0, t2 - t1, t3 - t2, t4 - t3
        print(f"{mib} MiB: put_file {put:.2f}s, save {save:.2f}s ({save / put:.2f}x); "
              f"get_file {get:.2f}s, restore {load:.2f}s ({load / get:.2f}x)")
    finally:
        httpd.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1024)
