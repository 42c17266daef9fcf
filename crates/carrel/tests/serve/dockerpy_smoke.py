"""docker-py smoke test against `carrel serve` (run by crates/carrel/tests/serve.rs).

Usage: python dockerpy_smoke.py unix:///path/to/socket SCRATCH_DIR
Prints one line per check and exits non-zero on the first failure.
"""
import io
import os
import sys
import tarfile

import docker

base_url, scratch = sys.argv[1], sys.argv[2]
client = docker.DockerClient(base_url=base_url, version="auto", timeout=60)
api = client.api


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok {name}", flush=True)


# Version negotiation and system endpoints.
v = client.version()
check("version", v["ApiVersion"] == "1.50" and "GoVersion" in v, v)
info = client.info()
check("info", info["Driver"] in ("overlay2", "copy") and info["Swarm"]["LocalNodeState"] == "inactive", info.get("Driver"))
check("ping", client.ping())
df = api.df()
check("df", all(k in df for k in ("LayersSize", "Images", "Containers", "Volumes")), df.keys())

# Volumes: create/list/inspect give the same object.
vol = api.create_volume("pyvol", labels={"a": "b"})
check("volume create", vol["Name"] == "pyvol" and vol["Labels"] == {"a": "b"}, vol)
listed = api.volumes(filters={"name": "pyvol"})["Volumes"]
check("volume list equals create", vol in listed, listed)
check("volume inspect equals create", api.inspect_volume("pyvol") == vol)
anon = api.create_volume()
check("anonymous volume", len(anon["Name"]) == 64)
try:
    api.inspect_volume("nosuchvol")
    check("volume 404", False)
except docker.errors.NotFound as e:
    check("volume 404", "no such volume" in str(e), e)

# A container with a named volume, a bind mount, an anonymous volume and a tmpfs.
hostdir = os.path.join(scratch, "bind")
os.makedirs(hostdir, exist_ok=True)
with open(os.path.join(hostdir, "hello.txt"), "w") as f:
    f.write("from the host\n")
cid = api.create_container(
    "busybox",
    ["sh", "-c", "cat /host/hello.txt; cat /tmp/put.txt; echo data > /data/f; cp /data/f /tmp/f; grep -c ' /tm ' /proc/mounts"],
    volumes=["/vol1"],
    host_config=api.create_host_config(
        binds={"pyvol": {"bind": "/data", "mode": "rw"}, hostdir: {"bind": "/host", "mode": "ro"}},
        tmpfs={"/tm": "size=1m"},
    ),
)["Id"]
# put_archive into a created, never started container.
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as t:
    data = b"put before start\n"
    ti = tarfile.TarInfo("put.txt")
    ti.size = len(data)
    t.addfile(ti, io.BytesIO(data))
check("put_archive", api.put_archive(cid, "/tmp", buf.getvalue()))
inspect = api.inspect_container(cid)
mounts = {m["Destination"]: m for m in inspect["Mounts"]}
check("mounts in inspect", mounts["/data"]["Name"] == "pyvol" and mounts["/host"]["Source"] == hostdir and not mounts["/host"]["RW"], inspect["Mounts"])
check("log config", inspect["HostConfig"]["LogConfig"]["Type"] == "json-file")
api.start(cid)
res = api.wait(cid, timeout=60)
check("wait", res["StatusCode"] == 0, res)
logs = api.logs(cid).decode()
check("logs", logs == "from the host\nput before start\n1\n", repr(logs))

# get_archive of a file the container wrote, with its stat.
strm, stat = api.get_archive(cid, "/tmp/f")
check("get_archive stat", stat["name"] == "f" and stat["size"] == 5, stat)
raw = b"".join(strm)
with tarfile.open(fileobj=io.BytesIO(raw)) as t:
    content = t.extractfile("f").read()
check("get_archive content", content == b"data\n", content)

# Volume in use, then removed with the container.
try:
    api.remove_volume("pyvol")
    check("volume in use", False)
except docker.errors.APIError as e:
    check("volume in use", e.status_code == 409 and "volume is in use" in str(e), e)
api.remove_container(cid, v=True)
api.remove_volume("pyvol")
check("volume removed", "pyvol" not in [x["Name"] for x in (api.volumes()["Volumes"] or [])])

# containers.run with auto-remove, and the prune of anonymous volumes.
out = client.containers.run("busybox", ["echo", "hi"], remove=True)
check("containers.run", out == b"hi\n", out)
pruned = api.prune_volumes()
check("prune volumes", anon["Name"] in (pruned["VolumesDeleted"] or []), pruned)

# Images: commit, save and load.
cid = api.create_container("busybox", ["touch", "/newfile"])["Id"]
api.start(cid)
api.wait(cid)
check("diff exact", api.diff(cid) == [{"Path": "/newfile", "Kind": 1}], api.diff(cid))
img = api.commit(cid, repository="pyimg", tag="v1", changes=["CMD [\"sh\"]"])
check("commit", client.images.get("pyimg:v1").id == img["Id"])
api.remove_container(cid)
data = b"".join(api.get_image("pyimg:v1"))
api.remove_image("pyimg:v1")
loaded = client.images.load(data)
check("load", any("pyimg:v1" in i.tags for i in loaded), loaded)
try:
    client.images.get("nosuchimage:latest")
    check("image 404", False)
except docker.errors.ImageNotFound:
    check("image 404", True)
print("docker-py smoke: all passed", flush=True)
