"""Create and deploy end to end from Python: stubs generated from api/ with
Debian's grpc_tools drive a real tgtd SAN, a real storaged and the real
controlplane. Nothing but the generated stubs talks to the control plane:
the protos are the contract for clients in other languages."""

import os
import random
import secrets
import shutil
import signal
import socket
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
TMP = os.environ.get("TEST_TMPDIR") or tempfile.gettempdir()
MIB = 1 << 20
TGTD = "/usr/sbin/tgtd"
TGTADM = "/usr/sbin/tgtadm"


def generate_stubs(out):
    """Python modules for every .proto under api/, into `out`."""
    os.makedirs(out, exist_ok=True)
    protos = []
    for root, _, files in os.walk(API):
        protos += [os.path.relpath(os.path.join(root, f), API)
                   for f in files if f.endswith(".proto")]
    rc = protoc.main(["protoc", "-I" + API, "-I/usr/include",
                      "--python_out=" + out, "--grpc_python_out=" + out] +
                     sorted(protos))
    if rc != 0:
        raise RuntimeError("grpc_tools.protoc failed: %d" % rc)
    sys.path.insert(0, out)


def free_loopback_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class San:
    """One private tgtd on 127.0.0.1:<free port>, as tests/san.h does: its
    control socket in a short directory of its own under /tmp (sockaddr_un
    holds 108 bytes; TEST_TMPDIR is often longer), LUNs on sparse files."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.ipc_dir = tempfile.mkdtemp(dir="/tmp", prefix="san")
        self.env = dict(os.environ, TGT_IPC_SOCKET=os.path.join(self.ipc_dir, "ipc"))
        self.port = free_loopback_port()
        # Only names the IPC socket, which lives in our own directory.
        self.control_port = 1000 + self.port % 30000
        self.next_tid = 1
        self.tids = []
        self.log = open(os.path.join(directory, "tgtd.log"), "ab")
        self.process = subprocess.Popen(
            [TGTD, "-f", "--iscsi", "portal=127.0.0.1:%d" % self.port,
             "-C", str(self.control_port)],
            env=self.env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.time() + 10
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("tgtd exited with %d; see %s/tgtd.log"
                                   % (self.process.returncode, directory))
            if self.admin("--op", "show", "--mode", "system", check=False).returncode == 0:
                break
            if time.time() > deadline:
                raise RuntimeError("tgtd did not answer tgtadm within 10 s")
            time.sleep(0.02)

    def admin(self, *args, check=True):
        result = subprocess.run([TGTADM, "-C", str(self.control_port)] + list(args),
                                env=self.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if check and result.returncode != 0:
            raise RuntimeError("tgtadm %s exited %d: %s" % (
                " ".join(args), result.returncode, result.stdout.decode(errors="replace")))
        return result

    def create_lun(self, name, size):
        """Target iqn.2026-11.test:<name>, LUN 1 on a sparse file of `size`
        bytes, thin, raised burst limits, open to every initiator. Returns
        (iqn, backing path)."""
        tid = str(self.next_tid)
        self.next_tid += 1
        iqn = "iqn.2026-11.test:" + name
        path = os.path.join(self.dir, name + ".img")
        with open(path, "ab") as f:
            if f.tell() < size:
                f.truncate(size)
        self.tids.append(tid)
        self.admin("--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", tid, "-T", iqn)
        self.admin("--lld", "iscsi", "--op", "new", "--mode", "logicalunit", "--tid", tid,
                   "--lun", "1", "-b", path, "--blocksize", "512")
        self.admin("--lld", "iscsi", "--op", "update", "--mode", "logicalunit", "--tid", tid,
                   "--lun", "1", "--params", "thin_provisioning=1")
        for key, value in (("MaxRecvDataSegmentLength", "262144"),
                           ("FirstBurstLength", "262144"),
                           ("MaxBurstLength", "1048576"),
                           ("InitialR2T", "No")):
            self.admin("--lld", "iscsi", "--op", "update", "--mode", "target", "--tid", tid,
                       "-n", key, "-v", value)
        self.admin("--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", tid,
                   "-I", "ALL")
        return iqn, path

    def stop(self):
        """tgtd ignores SIGTERM: delete the targets, then the system; SIGKILL
        only as a last resort. Idempotent."""
        if self.process is None:
            return
        for tid in self.tids:
            self.admin("--lld", "iscsi", "--op", "delete", "--mode", "target", "--force",
                       "--tid", tid, check=False)
        self.admin("--op", "delete", "--mode", "system", check=False)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        self.log.close()
        shutil.rmtree(self.ipc_dir, ignore_errors=True)


class Server:
    """A project binary started with --port-file, stopped with SIGTERM."""

    def __init__(self, argv, directory, name):
        self.port_file = os.path.join(directory, name + ".port")
        self.log = open(os.path.join(directory, name + ".log"), "ab")
        self.name = name
        self.process = subprocess.Popen(argv + ["--port-file=" + self.port_file],
                                        stdin=subprocess.DEVNULL, stdout=self.log,
                                        stderr=self.log)
        deadline = time.time() + 20
        while not (os.path.exists(self.port_file) and read(self.port_file).strip()):
            if self.process.poll() is not None:
                raise RuntimeError("%s exited early with %d" % (name, self.process.returncode))
            if time.time() > deadline:
                raise RuntimeError("%s did not start within 20 s" % name)
            time.sleep(0.05)
        self.address = "127.0.0.1:%d" % int(read(self.port_file))

    def stop(self):
        """SIGTERM; returns the exit code (None if it had to be killed)."""
        if self.process is None:
            return None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            code = None
        self.process = None
        self.log.close()
        return code


def random_bytes(size, seed):
    return random.Random(seed).randbytes(size)


def write_internal_token(directory):
    """A fresh --internal-token-file (mode 0600) for controlplane and storaged."""
    path = os.path.join(directory, "internal.token")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32) + "\n")
    return path


def read(path):
    with open(path, "rb") as f:
        return f.read()


class PythonCreateDeployTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(dir=TMP, prefix="py-e2e")
        generate_stubs(os.path.join(self.dir, "stubs"))
        self.san = None
        self.cp = None
        self.storaged = None
        self.addCleanup(self.stop_all)
        self.san = San(os.path.join(self.dir, "san"))
        self.token_file = write_internal_token(self.dir)
        self.cp = Server([os.path.join(RUNFILES, "controlplane", "controlplane"),
                          "--listen=127.0.0.1:0", "--db=" + os.path.join(self.dir, "cp.db"),
                          "--internal-token-file=" + self.token_file,
                          "--node-heartbeat-ms=500", "--node-missed-heartbeats=20"],
                         self.dir, "controlplane")
        self.admin_key = read(os.path.join(self.dir, "cp.db.admin-key")).decode().strip()
        self.assertTrue(self.admin_key)

    def stop_all(self):
        # Reverse order of start; every process is ended whatever failed.
        codes = {}
        for name in ("storaged", "cp"):
            server = getattr(self, name)
            if server is not None:
                codes[name] = server.stop()
                setattr(self, name, None)
        if self.san is not None:
            self.san.stop()
            self.san = None
        for name, code in codes.items():
            self.assertEqual(code, 0, "%s did not exit 0 on SIGTERM" % name)

    def call(self, rpc, request, key, timeout=30):
        return rpc(request, metadata=(("authorization", "Bearer " + key),), timeout=timeout)

    def watch(self, operations, pb, op_id, key):
        """WatchOperation until a terminal state; returns the last Operation."""
        terminal = (pb.OPERATION_STATE_SUCCEEDED, pb.OPERATION_STATE_FAILED,
                    pb.OPERATION_STATE_CANCELLED)
        last = None
        for op in self.call(operations.WatchOperation,
                            pb.WatchOperationRequest(id=op_id), key, timeout=180):
            self.assertEqual(op.id, op_id)
            last = op
            if op.state in terminal:
                break
        self.assertIsNotNone(last, "WatchOperation sent nothing")
        self.assertIn(last.state, terminal, str(last))
        return last

    def test_create_and_deploy_through_python_stubs(self):
        from imagetemplates.v1 import common_pb2
        from imagetemplates.v1 import identity_pb2, identity_pb2_grpc
        from imagetemplates.v1 import image_templates_pb2, image_templates_pb2_grpc
        from imagetemplates.v1 import inventory_pb2, inventory_pb2_grpc
        from imagetemplates.v1 import operations_pb2, operations_pb2_grpc

        start = time.time()
        channel = grpc.insecure_channel(self.cp.address)
        self.addCleanup(channel.close)
        identity = identity_pb2_grpc.IdentityServiceStub(channel)
        inventory = inventory_pb2_grpc.InventoryServiceStub(channel)
        templates = image_templates_pb2_grpc.ImageTemplateServiceStub(channel)
        operations = operations_pb2_grpc.OperationServiceStub(channel)
        admin = self.admin_key

        # --- the operator: datacenter, storage node, SAN volumes, IP pool ---
        dc = self.call(inventory.CreateDatacenter,
                       inventory_pb2.CreateDatacenterRequest(name="dc1"), admin)
        self.assertEqual(dc.datacenter.name, "dc1")
        self.storaged = Server(
            [os.path.join(RUNFILES, "storaged", "storaged"), "--listen=127.0.0.1:0",
             "--store=" + os.path.join(self.dir, "store"), "--datacenter=dc1",
             "--node-id=n0", "--controlplane=" + self.cp.address,
             "--portals=127.0.0.1:%d" % self.san.port,
             "--internal-token-file=" + self.token_file], self.dir, "storaged")
        deadline = time.time() + 20
        while True:
            nodes = self.call(inventory.ListStorageNodes, inventory_pb2.ListStorageNodesRequest(
                state=inventory_pb2.STORAGE_NODE_STATE_UP), admin)
            if len(nodes.storage_nodes) == 1:
                break
            self.assertLess(time.time(), deadline, "storaged did not register")
            time.sleep(0.1)
        self.assertEqual(nodes.storage_nodes[0].id, "n0")

        backing = {}  # SAN volume id -> the LUN's backing file

        def add_volume(name, size):
            iqn, path = self.san.create_lun(name, size)
            response = self.call(inventory.CreateSanVolume, inventory_pb2.CreateSanVolumeRequest(
                datacenter="dc1", san_host="n0",
                iscsi=common_pb2.IscsiAddress(portal="127.0.0.1:%d" % self.san.port,
                                              iqn=iqn, lun=1),
                size_bytes=size, thin=True), admin)
            backing[response.san_volume.id] = path
            return response.san_volume.id, path

        # The source disk: known random bytes, then a zero tail (sparse).
        disk_size = 16 * MIB
        source_volume, source_path = add_volume("src", disk_size)
        source_bytes = random_bytes(12 * MIB, seed=20261106) + bytes(4 * MIB)
        with open(source_path, "r+b") as f:
            f.write(source_bytes[:12 * MIB])
        self.assertEqual(read(source_path), source_bytes)
        # Blank targets for the deploy: a boot disk and a config drive.
        add_volume("boot1", disk_size)
        add_volume("cfg1", 4 * MIB)

        pool = self.call(inventory.CreateIpPool, inventory_pb2.CreateIpPoolRequest(
            datacenter="dc1", subnet="10.20.0.0/24", gateway="10.20.0.1",
            dns_servers=["10.20.0.2"],
            ranges=[inventory_pb2.IpRange(start="10.20.0.10", end="10.20.0.20")]), admin)
        self.assertEqual(pool.ip_pool.total_count, 11)

        # --- the operator: an account, a user with permissions, an API key ---
        account = self.call(identity.CreateAccount,
                            identity_pb2.CreateAccountRequest(name="acme"), admin).account
        user = self.call(identity.CreateUser, identity_pb2.CreateUserRequest(
            account_id=account.id, username="alice",
            permissions=[common_pb2.PERMISSION_IMAGE_TEMPLATE_MANAGE,
                         common_pb2.PERMISSION_SERVER_VIEW,
                         common_pb2.PERMISSION_SERVER_PROVISION],
            device_access=identity_pb2.DeviceAccess(all_servers=True)), admin).user
        self.assertEqual(len(user.permissions), 3)
        key = self.call(identity.CreateApiKey,
                        identity_pb2.CreateApiKeyRequest(user_id=user.id), admin).secret
        self.assertTrue(key)
        caller = self.call(identity.GetCaller, identity_pb2.GetCallerRequest(), key)
        self.assertEqual(caller.user.id, user.id)

        # --- the operator: the source server with its disk and credentials ---
        source = self.call(inventory.CreateServer, inventory_pb2.CreateServerRequest(
            account_id=account.id, type=inventory_pb2.SERVER_TYPE_VIRTUAL,
            hostname="source", domain="example.com", datacenter="dc1",
            configuration=inventory_pb2.ServerConfiguration(
                cpu_count=2, memory_mib=2048, os_reference="DEBIAN_12_64",
                network_interfaces=[inventory_pb2.NetworkInterface(
                    name="eth0", mac_address="02:00:00:00:00:01",
                    ip_address="10.99.0.5/24")]),
            disks=[inventory_pb2.ServerDisk(device_index=0, boot=True,
                                            san_volume_id=source_volume)],
            power_state=inventory_pb2.POWER_STATE_RUNNING,
            credentials=[inventory_pb2.SoftwareCredential(
                software="os", username="root", password="s3cret")]), admin).server
        self.assertTrue(source.has_credentials)

        # --- alice: create a template, watch it to the end ---
        create = self.call(templates.CreateImageTemplate,
                           image_templates_pb2.CreateImageTemplateRequest(
                               server_id=source.id, name="golden", tags=["python"]), key)
        self.assertTrue(create.id)
        self.assertEqual(create.kind, operations_pb2.OPERATION_KIND_CREATE_IMAGE_TEMPLATE)
        create = self.watch(operations, operations_pb2, create.id, key)
        self.assertEqual(create.state, operations_pb2.OPERATION_STATE_SUCCEEDED, str(create))
        self.assertEqual(create.WhichOneof("result"), "image_template_id")
        created_at = time.time()
        template = self.call(templates.GetImageTemplate,
                             image_templates_pb2.GetImageTemplateRequest(
                                 id=create.image_template_id), key).image_template
        self.assertEqual(template.status, image_templates_pb2.IMAGE_TEMPLATE_STATUS_ACTIVE)
        self.assertEqual(template.name, "golden")
        self.assertEqual(list(template.tags), ["python"])
        self.assertEqual(len(template.disks), 1)
        self.assertTrue(template.disks[0].boot)
        self.assertEqual(template.disks[0].logical_size_bytes, disk_size)
        self.assertTrue(template.disks[0].manifest_digest.startswith("sha256:"))
        listed = self.call(templates.ListImageTemplates,
                           image_templates_pb2.ListImageTemplatesRequest(page_size=10), key)
        self.assertEqual([t.id for t in listed.image_templates], [template.id])

        # --- alice: deploy one server from it ---
        deploy = self.call(templates.DeployImageTemplate,
                           image_templates_pb2.DeployImageTemplateRequest(
                               image_template_id=template.id, datacenter="dc1", quantity=1,
                               hostnames=["web1"], domain="example.com"), key)
        self.assertEqual(deploy.kind, operations_pb2.OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE)
        deploy = self.watch(operations, operations_pb2, deploy.id, key)
        self.assertEqual(deploy.state, operations_pb2.OPERATION_STATE_SUCCEEDED, str(deploy))
        self.assertEqual(len(deploy.deployed_servers.server_ids), 1)
        deployed_at = time.time()

        server = self.call(inventory.GetServer, inventory_pb2.GetServerRequest(
            id=deploy.deployed_servers.server_ids[0]), key).server
        self.assertEqual(server.hostname, "web1")
        self.assertEqual(server.state, inventory_pb2.SERVER_STATE_ACTIVE)
        self.assertEqual(server.source_image_template_id, template.id)
        self.assertEqual(len(server.configuration.network_interfaces), 1)
        nic = server.configuration.network_interfaces[0]
        self.assertTrue(nic.ip_address.startswith("10.20.0."), nic.ip_address)
        self.assertNotEqual(nic.mac_address, "02:00:00:00:00:01")

        # The deployed disks, read back from the LUNs' backing files.
        boot = [d for d in server.disks if d.boot]
        config = [d for d in server.disks if d.config_drive]
        self.assertEqual(len(boot), 1, str(server))
        self.assertEqual(len(config), 1, str(server))
        self.assertNotEqual(boot[0].san_volume_id, source_volume)
        self.assertTrue(read(backing[boot[0].san_volume_id]) == source_bytes,
                        "the deployed boot disk differs from the source disk")

        # The config drive, read by an independent reader (xorriso).
        cidata = os.path.join(self.dir, "cidata")
        extracted = subprocess.run(
            ["xorriso", "-osirrox", "on", "-indev", backing[config[0].san_volume_id],
             "-extract", "/", cidata], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.assertEqual(extracted.returncode, 0, extracted.stdout.decode(errors="replace"))
        meta_data = read(os.path.join(cidata, "meta-data")).decode()
        network_config = read(os.path.join(cidata, "network-config")).decode()
        self.assertIn("local-hostname: web1", meta_data)
        self.assertIn("instance-id: " + server.id, meta_data)
        self.assertIn(nic.ip_address, network_config)
        self.assertIn(nic.mac_address, network_config)
        self.assertIn("10.20.0.1", network_config)

        sys.stderr.write("python e2e: setup+create %.1f s, deploy %.1f s\n"
                         % (created_at - start, deployed_at - created_at))


if __name__ == "__main__":
    unittest.main()
