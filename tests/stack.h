// A whole stack for end-to-end tests, as real processes on loopback: tgtd
// SANs, one storaged per SAN (node n<i>, serving SAN i) registered with the
// controlplane, the datacenters they sit in, and the operator's API key. The
// tests add what differs (IP pools, users, volumes, servers) through the
// helpers below or the stubs.
//
// Helpers report problems with gtest assertions: call the void ones under
// ASSERT_NO_FATAL_FAILURE.
#ifndef TESTS_STACK_H_
#define TESTS_STACK_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"
#include "imagetemplates/v1/identity.grpc.pb.h"
#include "imagetemplates/v1/image_templates.grpc.pb.h"
#include "imagetemplates/v1/inventory.grpc.pb.h"
#include "imagetemplates/v1/operations.grpc.pb.h"
#include "tests/identity_setup.h"
#include "tests/process.h"
#include "tests/san.h"
#include "tests/tls_certificates.h"

namespace tests {

struct StackOptions {
  // Prefix of the test's directory (logs, database, stores).
  std::string dir_prefix = "e2e";
  // One SAN and one storaged per entry: storaged n<i> serves SAN i and sits
  // in datacenter node_datacenters[i]. Each datacenter is created once.
  std::vector<std::string> node_datacenters = {"dc1", "dc1"};
  // Flags added to the controlplane's (listen, db, admin key, internal token,
  // heartbeat).
  std::vector<std::string> controlplane_flags;
  // Nodes beat often (registration is quick) but count as DOWN only after
  // 10 s of silence, so a loaded machine's stall does not fail a create.
  int node_heartbeat_ms = 500;
  int node_missed_heartbeats = 20;
  // The controlplane binary; empty: the one built with the test.
  std::string controlplane_binary;
  // Every connection over TLS (tests/tls_certificates.h): the controlplane
  // serves TLS, storaged requires client certificates, internal calls check
  // their peers, and this process's clients use client_credentials().
  bool tls = false;
};

// Not thread-safe except where noted. Destroying it kills the daemons, stops
// the SANs and deletes the stores and LUN files (logs and the database stay;
// see KeepTestData()).
class Stack {
 public:
  explicit Stack(StackOptions options = {});
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;
  ~Stack();

  // SANs, controlplane, datacenters, storaged nodes; returns once every node
  // is UP.
  void Start();

  // The controlplane on `port` (0: a free one) and the stack's database.
  void StartControlPlane(int port = 0);
  // kill -9 of the controlplane, then `while_down` (if set), then a new one
  // on the same port and database (the nodes keep their --controlplane
  // address).
  void KillAndRestartControlPlane(const std::function<void()>& while_down = nullptr);
  // storaged n<i> (again, after a kill: same store, a new port).
  void StartStoraged(int i);
  // Until every storaged is UP (20 s).
  void WaitNodesUp();

  // A new account with one user holding `permissions` (all servers) and an
  // API key.
  User NewUser(const std::string& account_name,
               const std::vector<imagetemplates::v1::Permission>& permissions);
  // An IP pool of `datacenter` with the range start-end; returns its id.
  std::string AddIpPool(const std::string& datacenter, const std::string& subnet,
                        const std::string& gateway, const std::string& start,
                        const std::string& end, const std::vector<std::string>& dns = {});
  // A LUN on SAN `san` added to the pool of its node's datacenter (thin
  // unless `options` says otherwise); returns the volume id. The LUN's
  // backing file is backing(id).
  std::string AddVolume(int san, const std::string& name, uint64_t size, Lun* out = nullptr,
                        LunOptions options = ThinLun());

  // Polls the operation as `key` every `poll` until it ends or `timeout`
  // passes (a test failure). Thread-safe.
  imagetemplates::v1::Operation WaitOperation(const std::string& key, const std::string& id,
                                              absl::Duration timeout = absl::Seconds(180),
                                              absl::Duration poll = absl::Milliseconds(100));
  // Polls until the operation's transfer started (bytes_done > 0) or it
  // ended (60 s).
  imagetemplates::v1::Operation WaitTransferStarted(const std::string& key,
                                                    const std::string& id);
  imagetemplates::v1::ImageTemplate GetTemplate(const std::string& key, const std::string& id);
  imagetemplates::v1::Server GetServer(const std::string& key, const std::string& id);
  // A RUNNING virtual server of `account_id` in dc1: 1 CPU, 1024 MiB, NIC
  // eth0 with MAC 02:00:00:00:00:01, a root credential, and `volumes` as its
  // disks in order (the first boots). Callers adjust it, then CreateServer.
  static imagetemplates::v1::CreateServerRequest ServerRequest(
      const std::string& account_id, const std::string& hostname,
      const std::vector<std::string>& volumes);
  // Creates the server as the operator; its id (a test failure if refused).
  std::string CreateServer(const imagetemplates::v1::CreateServerRequest& request);
  // A stub to storaged `node_id` at the address it registered now; its calls
  // carry the internal token.
  std::unique_ptr<imagetemplates::storagenode::v1::StorageNode::Stub> NodeStub(
      const std::string& node_id);

  const std::string& dir() const { return dir_; }
  // What this process connects to the controlplane with (TLS or plaintext).
  std::shared_ptr<grpc::ChannelCredentials> client_credentials() const;
  // With StackOptions::tls, written by Start.
  const TestCertificates& certificates() const { return certs_; }
  // The stack's shared secret of the internal API: its file (0600, written
  // by Start) is the --internal-token-file of the controlplane and every
  // storaged.
  const std::string& internal_token() const { return internal_token_; }
  std::string internal_token_file() const { return dir_ + "/internal.token"; }
  const std::string& admin_key() const { return admin_; }
  San& san(int i) { return *sans_[i]; }
  Process& controlplane() { return *cp_; }
  Process& storaged(int i) { return *storaged_[i]; }
  std::string ControlPlaneLog() const { return dir_ + "/controlplane.log"; }
  std::string StoragedLog(int i) const;
  const std::string& backing(const std::string& volume_id) { return backing_[volume_id]; }

  imagetemplates::v1::IdentityService::Stub& identity() { return *identity_; }
  imagetemplates::v1::InventoryService::Stub& inventory() { return *inventory_; }
  imagetemplates::v1::ImageTemplateService::Stub& templates() { return *templates_; }
  imagetemplates::v1::OperationService::Stub& operations() { return *operations_; }

 private:
  static LunOptions ThinLun() {
    LunOptions options;
    options.thin = true;
    return options;
  }

  // The flags that make a daemon use the stack's certificates.
  std::vector<std::string> TlsFlags(bool require_client_certs) const;

  const StackOptions options_;
  TestCertificates certs_;
  std::string dir_;
  std::string admin_;
  std::string internal_token_;
  // Declared so that the daemons die before the SANs go.
  std::vector<std::unique_ptr<San>> sans_;
  std::unique_ptr<Process> cp_;
  std::vector<std::unique_ptr<Process>> storaged_;
  std::map<std::string, std::string> backing_;  // volume id -> LUN file
  std::unique_ptr<imagetemplates::v1::IdentityService::Stub> identity_;
  std::unique_ptr<imagetemplates::v1::InventoryService::Stub> inventory_;
  std::unique_ptr<imagetemplates::v1::ImageTemplateService::Stub> templates_;
  std::unique_ptr<imagetemplates::v1::OperationService::Stub> operations_;
};

// Test data helpers.

// The file, or up to `size` bytes of it from `offset`.
std::string ReadFile(const std::string& path);
std::string ReadFile(const std::string& path, uint64_t offset, uint64_t size);
// Fills [offset, offset + size) of `path` with fast pseudo-random
// (incompressible) bytes; the same seed gives the same bytes.
void FillRandom(const std::string& path, uint64_t offset, uint64_t size, uint64_t seed);
// std::system.
int Shell(const std::string& command);
// Writes a fresh random token (64 hex digits and a newline) to `path` with
// mode 0600, as --internal-token-file wants it; returns the token.
std::string WriteInternalToken(const std::string& path);

}  // namespace tests

#endif  // TESTS_STACK_H_
