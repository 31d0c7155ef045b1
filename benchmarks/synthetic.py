"""Synthetic SDK images for benchmarks: a base image plus one module.

The module's import and its ``Client()`` each run a fixed number of loop
iterations, so a candidate's extra work is known exactly.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import replace

import docker

from harness.models import BuildSpec, Limits, Phase, PreparedBuild, Scenario, SpecKind

# About 0.05 s of CPU time for 5,000,000 iterations under Python 3.11 on the
# benchmark host (2-core AMD EPYC); the exact time does not matter.
BASE_LOOPS = 5_000_000
LABELS = {"coldstart.benchmark": "1"}

SDK_SOURCE = """\
def spin(count):
    for _ in range(count):
        pass


spin({import_loops})


class Client:
    def __init__(self):
        spin({client_loops})
"""

DOCKERFILE = """\
FROM {base}
COPY sdk.py /tmp/sdk.py
RUN python3 -c "import shutil, site; shutil.copy('/tmp/sdk.py', \\
site.getsitepackages()[0])" && rm /tmp/sdk.py
"""

SCENARIO = Scenario(
    name="synthetic",
    description="Import a synthetic SDK, then construct its client.",
    phases=(
        Phase("import sdk", "import sdk", "init"),
        Phase("Client()", "sdk.Client()", "invoke"),
    ),
    budgets={"init": 10.0, "invoke": 3.0},
)
LIMITS = Limits(cpus=0.1, timeout_s=120.0)


def build_sdk(
    client: docker.DockerClient,
    base_tag: str,
    label: str,
    client_factor: float = 1.0,
) -> PreparedBuild:
    """Build (or reuse) the synthetic SDK whose Client() runs ``client_factor``
    times the baseline's loop iterations, and return it labelled ``label``."""
    source = SDK_SOURCE.format(
        import_loops=BASE_LOOPS, client_loops=round(BASE_LOOPS * client_factor)
    )
    context = make_context(base_tag, source)
    tag = f"coldstart-benchmark/sdk:{hashlib.sha256(context).hexdigest()[:12]}"
    image, _ = client.images.build(
        fileobj=io.BytesIO(context),
        custom_context=True,
        tag=tag,
        labels=LABELS,
        rm=True,
        network_mode="none",
    )
    spec = BuildSpec(
        label=label, kind=SpecKind.REQUIREMENT, raw=f"synthetic x{client_factor:g}"
    )
    build = PreparedBuild(
        spec=spec,
        distribution="sdk",
        version=f"x{client_factor:g}",
        commit=None,
        wheels=(),
        image_tag=tag,
        image_id=image.id or "",
        cache_key=tag.rsplit(":", 1)[-1],
    )
    return replace(build, spec=replace(spec, label=label))


def make_context(base_tag: str, source: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, text in (
            ("Dockerfile", DOCKERFILE.format(base=base_tag)),
            ("sdk.py", source),
        ):
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
