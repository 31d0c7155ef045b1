"""Tiny measurement images for tests, built on the local stand-in base image.

Each image is the base image plus a few pure-Python modules copied into its
site-packages, so tests control exactly what an import costs. Images and
containers made here carry the ``coldstart.test=1`` label.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Mapping

import docker

from harness.models import BuildSpec, PreparedBuild, SpecKind

# A Debian bookworm image with python3.11 that exists on the test engine.
BASE_IMAGE = "coldstart-probe/standin:test"
TEST_LABELS = {"coldstart.test": "1"}

DOCKERFILE = """\
FROM {base}
COPY modules/ /tmp/coldstart-test-modules/
RUN python3 -c "import shutil, site; \\
shutil.copytree('/tmp/coldstart-test-modules', site.getsitepackages()[0], \\
dirs_exist_ok=True)" \\
 && rm -rf /tmp/coldstart-test-modules \\
 && python3 -m compileall -q \\
 "$(python3 -c 'import site; print(site.getsitepackages()[0])')"
"""


def build_context(modules: Mapping[str, str], base: str) -> bytes:
    """Return a tar build context: the Dockerfile and ``modules/<path>`` files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        add_file(archive, "Dockerfile", DOCKERFILE.format(base=base))
        for path, source in sorted(modules.items()):
            add_file(archive, f"modules/{path}", source)
    return buffer.getvalue()


def add_file(archive: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode("utf-8")
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def build_test_image(
    client: docker.DockerClient,
    name: str,
    modules: Mapping[str, str],
    base: str = BASE_IMAGE,
) -> PreparedBuild:
    """Build (or reuse) an image with ``modules`` installed; return it as a build.

    ``modules`` maps a path under site-packages (``pkg/__init__.py``) to its
    source. The tag is derived from the content, so an unchanged image is
    reused.
    """
    context = build_context(modules, base)
    digest = hashlib.sha256(context).hexdigest()[:12]
    tag = f"coldstart-test/{name}:{digest}"
    image, _ = client.images.build(
        fileobj=io.BytesIO(context),
        custom_context=True,
        tag=tag,
        labels=TEST_LABELS,
        rm=True,
        forcerm=True,
        network_mode="none",
    )
    return prepared_build(name, tag, image.id or "")


def prepared_build(label: str, tag: str, image_id: str = "") -> PreparedBuild:
    """Return a PreparedBuild for an image a test made, for the runner."""
    spec = BuildSpec(label=label, kind=SpecKind.REQUIREMENT, raw=label)
    return PreparedBuild(
        spec=spec,
        distribution=label,
        version="0",
        commit=None,
        wheels=(),
        image_tag=tag,
        image_id=image_id,
        cache_key=tag.rsplit(":", 1)[-1],
    )
