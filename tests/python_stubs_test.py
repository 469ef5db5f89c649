"""Generates Python stubs from api/ with Debian's grpc_tools, imports them and
calls the real controlplane through them: the protos are the contract for
clients in other languages."""

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import grpc
from grpc_tools import protoc

RUNFILES = os.path.join(os.environ.get("TEST_SRCDIR", "."),
                        os.environ.get("TEST_WORKSPACE", "imagetemplates"))
API = os.path.join(RUNFILES, "api")
OUT = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))


def generate():
    protos = []
    for root, _, files in os.walk(API):
        protos += [os.path.relpath(os.path.join(root, f), API)
                   for f in files if f.endswith(".proto")]
    args = ["protoc", "-I" + API, "-I/usr/include", "--python_out=" + OUT,
            "--grpc_python_out=" + OUT] + sorted(protos)
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError("grpc_tools.protoc failed: %d" % rc)
    return protos


class PythonStubsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.protos = generate()
        sys.path.insert(0, OUT)

    def test_every_proto_generates_and_imports(self):
        import importlib
        self.assertGreaterEqual(len(self.protos), 7)
        for proto in self.protos:
            module = proto[:-len(".proto")].replace("/", ".")
            importlib.import_module(module + "_pb2")
            importlib.import_module(module + "_pb2_grpc")

    def test_services_expose_the_product_methods(self):
        from imagetemplates.v1 import image_templates_pb2
        from imagetemplates.storagenode.v1 import storage_node_pb2
        service = image_templates_pb2.DESCRIPTOR.services_by_name["ImageTemplateService"]
        methods = {m.name for m in service.methods}
        for name in ("CreateImageTemplate", "GetImageTemplate", "ListImageTemplates",
                     "UpdateImageTemplate", "DeleteImageTemplate", "DeployImageTemplate",
                     "ShareImageTemplate", "UnshareImageTemplate",
                     "PublishImageTemplate", "UnpublishImageTemplate"):
            self.assertIn(name, methods)
        node = storage_node_pb2.DESCRIPTOR.services_by_name["StorageNode"]
        node_methods = {m.name for m in node.methods}
        for name in ("CaptureVolume", "RestoreVolume", "WriteConfigDrive", "VerifyImage",
                     "DeleteImage", "CollectGarbage", "GetNodeStatus"):
            self.assertIn(name, node_methods)

    def test_calls_the_real_controlplane(self):
        from imagetemplates.v1 import image_templates_pb2, image_templates_pb2_grpc
        port_file = os.path.join(OUT, "port")
        log = open(os.path.join(OUT, "controlplane.log"), "w")
        token_file = os.path.join(OUT, "internal.token")
        with os.fdopen(os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600),
                       "w") as out:
            out.write(secrets.token_hex(32) + "\n")
        server = subprocess.Popen(
            [os.path.join(RUNFILES, "controlplane", "controlplane"),
             "--listen=127.0.0.1:0", "--db=" + os.path.join(OUT, "cp.db"),
             "--internal-token-file=" + token_file, "--port-file=" + port_file], stderr=log)
        try:
            deadline = time.time() + 20
            while not os.path.exists(port_file):
                self.assertIsNone(server.poll(), "controlplane exited early")
                self.assertLess(time.time(), deadline, "controlplane did not start")
                time.sleep(0.05)
            port = int(open(port_file).read())
            with grpc.insecure_channel("127.0.0.1:%d" % port) as channel:
                stub = image_templates_pb2_grpc.ImageTemplateServiceStub(channel)
                with self.assertRaises(grpc.RpcError) as raised:
                    stub.ListImageTemplates(
                        image_templates_pb2.ListImageTemplatesRequest(page_size=10),
                        timeout=10)
                self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
                # With the operator's key (written at first start) it works.
                key = open(os.path.join(OUT, "cp.db.admin-key")).read().strip()
                response = stub.ListImageTemplates(
                    image_templates_pb2.ListImageTemplatesRequest(page_size=10),
                    metadata=(("authorization", "Bearer " + key),), timeout=10)
                self.assertEqual(len(response.image_templates), 0)
                self.assertEqual(response.next_page_token, "")
        finally:
            server.send_signal(signal.SIGTERM)
            self.assertEqual(server.wait(timeout=15), 0)
            log.close()


if __name__ == "__main__":
    unittest.main()
