#include "tests/create_deploy_fixture.h"

#include "absl/strings/str_cat.h"
#include "tests/rpc.h"

namespace tests {

namespace v1 = imagetemplates::v1;

bool AllZero(const std::string& data) {
  return data.find_first_not_of('\0') == std::string::npos;
}

void CreateDeployTest::SetUp() {
  ASSERT_NO_FATAL_FAILURE(stack_.Start());
  dir_ = stack_.dir();
  admin_ = stack_.admin_key();
  pool_id_ = stack_.AddIpPool("dc1", "10.20.0.0/24", "10.20.0.1", "10.20.0.10",
                              "10.20.0.40", {"10.20.0.2"});
  acme_ = stack_.NewUser(
      "acme",
      {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE, v1::PERMISSION_SERVER_VIEW,
       v1::PERMISSION_SERVER_PROVISION, v1::PERMISSION_PUBLIC_IMAGE_MANAGE});
}

std::string CreateDeployTest::AddServer(
    const User& owner, const std::vector<std::string>& volumes) {
  v1::CreateServerRequest request =
      Stack::ServerRequest(owner.account_id, "source", volumes);
  request.mutable_configuration()->set_cpu_count(2);
  request.mutable_configuration()->set_memory_mib(2048);
  request.mutable_configuration()
      ->mutable_network_interfaces(0)
      ->set_ip_address("10.99.0.5/24");
  return stack_.CreateServer(request);
}

v1::Operation CreateDeployTest::CreateTemplate(const User& user,
                                               const std::string& server_id,
                                               const std::string& name,
                                               std::vector<int> data_disks,
                                               grpc::Status* status_out) {
  v1::CreateImageTemplateRequest request;
  request.set_server_id(server_id);
  request.set_name(name);
  for (int d : data_disks) request.add_data_disk_indexes(d);
  v1::Operation op;
  grpc::Status status = Call(
      stack_.templates(), &v1::ImageTemplateService::Stub::CreateImageTemplate,
      user.key, request, &op);
  if (status_out != nullptr) {
    *status_out = status;
  } else {
    EXPECT_TRUE(status.ok()) << status.error_message();
  }
  return op;
}

grpc::Status CreateDeployTest::Deploy(
    const User& user, const v1::DeployImageTemplateRequest& request,
    v1::Operation* op) {
  return Call(stack_.templates(),
              &v1::ImageTemplateService::Stub::DeployImageTemplate, user.key,
              request, op);
}

v1::DeployImageTemplateRequest CreateDeployTest::DeployRequest(
    const std::string& template_id, const std::string& hostname) {
  v1::DeployImageTemplateRequest request;
  request.set_image_template_id(template_id);
  request.set_datacenter("dc1");
  request.set_quantity(1);
  request.add_hostnames(hostname);
  request.set_domain("example.com");
  return request;
}

std::vector<v1::SanVolume> CreateDeployTest::Volumes() {
  v1::ListSanVolumesRequest request;
  request.set_page_size(500);
  v1::ListSanVolumesResponse response;
  EXPECT_TRUE(Call(stack_.inventory(),
                   &v1::InventoryService::Stub::ListSanVolumes, admin_, request,
                   &response)
                  .ok());
  return {response.san_volumes().begin(), response.san_volumes().end()};
}

int64_t CreateDeployTest::AllocatedAddresses() {
  v1::GetIpPoolRequest request;
  request.set_id(pool_id_);
  v1::GetIpPoolResponse response;
  EXPECT_TRUE(Call(stack_.inventory(), &v1::InventoryService::Stub::GetIpPool,
                   admin_, request, &response)
                  .ok());
  return response.ip_pool().allocated_count();
}

std::map<std::string, std::string> CreateDeployTest::ReadConfigDrive(
    const std::string& backing) {
  static int n = 0;
  std::string out = absl::StrCat(dir_, "/cidata", ++n);
  EXPECT_EQ(Shell(absl::StrCat("xorriso -osirrox on -indev ", backing,
                               " -extract / ", out, " >/dev/null 2>&1")),
            0);
  std::map<std::string, std::string> files;
  for (const char* name : {"meta-data", "network-config", "user-data"}) {
    files[name] = ReadFile(absl::StrCat(out, "/", name));
  }
  return files;
}

}  // namespace tests
