#!/usr/bin/env python3
"""Build a `docker save`-format archive (legacy manifest.json layout, uncompressed layers) from
host directories, one layer per directory, so every engine loads the very same bytes.

usage: mkarchive.py OUT.tar REPO:TAG SRC_DIR[=DEST_PATH] [SRC_DIR[=DEST_PATH] ...]

Example (the `load` suite's default, ~330 MB in 4 layers):
    python3 bench/mkarchive.py /var/tmp/carrel-bench/inputs/multi.tar bench/multi:latest \
        /usr/lib/python3.11 /usr/include /usr/lib/gcc /usr/share/perl

Layer tars are written like Docker's: ustar/GNU headers with whole-second mtimes, so only long
names or big ids need a PAX record (Python's tarfile would otherwise add a PAX header with a
fractional mtime to every entry). Entries are in sorted order, so the same trees give the same
layers. The archive is written to OUT.tar.tmp and renamed into place when complete, so a script
that reuses an existing archive never picks up a half-written one.
"""
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile


def _whole_seconds(ti):
    """tarfile filter: integer mtimes (as `docker save` writes them); keep everything else."""
    ti.mtime = int(ti.mtime)
    return ti


def layer_tar(src, dest, path):
    """Write SRC (a host directory) as a layer tar whose entries live under DEST."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        prefix = dest.strip("/")
        # parent directories of dest, so that every layer can be extracted on its own
        parts = prefix.split("/") if prefix else []
        for i in range(1, len(parts)):
            ti = tarfile.TarInfo("/".join(parts[:i]))
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            t.addfile(ti)
        # recursive add walks directories in sorted order; sockets are skipped by tarfile
        t.add(src, arcname=prefix or ".", recursive=True, filter=_whole_seconds)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    if len(sys.argv) < 4 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    out, tag, *specs = sys.argv[1:]
    out_dir = os.path.dirname(os.path.abspath(out))
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=out_dir)
    diff_ids, layer_files = [], []
    for i, spec in enumerate(specs):
        src, _, dest = spec.partition("=")
        dest = dest or src
        if not os.path.isdir(src):
            sys.exit(f"mkarchive: {src}: not a directory")
        p = os.path.join(tmp, f"layer{i}.tar")
        layer_tar(src, dest, p)
        d = sha256_file(p)
        diff_ids.append("sha256:" + d)
        layer_files.append((p, d))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": f"layer {s}"} for s in specs],
    }
    cfg = json.dumps(config, separators=(",", ":")).encode()
    cfg_id = hashlib.sha256(cfg).hexdigest()
    manifest = [{"Config": f"{cfg_id}.json", "RepoTags": [tag],
                 "Layers": [f"{d}/layer.tar" for _, d in layer_files]}]
    part = out + ".tmp"
    with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as t:
        seen = set()
        for p, d in layer_files:
            if d in seen:  # two identical layers are stored once, as docker save does
                continue
            seen.add(d)
            t.add(p, arcname=f"{d}/layer.tar", filter=_whole_seconds)
        for name, data in ((f"{cfg_id}.json", cfg), ("manifest.json", json.dumps(manifest).encode())):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 1767225600  # 2026-01-01, fixed so the same inputs give the same archive
            t.addfile(ti, io.BytesIO(data))
    os.replace(part, out)
    sizes = [os.path.getsize(p) for p, _ in layer_files]
    for p, _ in layer_files:
        os.unlink(p)
    os.rmdir(tmp)
    print(f"{out}: {len(specs)} layers ({', '.join(f'{s / 1e6:.0f} MB' for s in sizes)}; "
          f"{os.path.getsize(out) / 1e6:.0f} MB in all), config sha256:{cfg_id}")


if __name__ == "__main__":
    main()
