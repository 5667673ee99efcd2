"""The committed protobuf module is what `make proto` generates, for the pinned runtime."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys

import google.protobuf
import pytest

from conftest import ROOT


def test_generated_module_is_current(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the `proto` extra) regenerates it")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}",
                    f"--python_out={tmp_path}", str(ROOT / "proto" / "automtl.proto")],
                   check=True)
    fresh = (tmp_path / "automtl_pb2.py").read_text()
    committed = (ROOT / "automtl_cli" / "proto" / "automtl_pb2.py").read_text()
    assert fresh == committed, "automtl_pb2.py is stale: run `make proto` and commit it"


def test_protobuf_pinned_to_generated_major():
    committed = (ROOT / "automtl_cli" / "proto" / "automtl_pb2.py").read_text()
    major = int(re.search(r"Protobuf Python Version: (\d+)\.", committed).group(1))
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    requires = cfg["options"]["install_requires"]
    pin = re.search(r"protobuf>=(\d+)[.\d]*,<(\d+)", requires)
    assert pin, "setup.cfg must pin protobuf to one major version"
    assert (int(pin.group(1)), int(pin.group(2))) == (major, major + 1)
    assert int(google.protobuf.__version__.split(".")[0]) == major
