#include "controlplane/migrations.h"

namespace controlplane {

const std::vector<std::string>& Migrations() {
  static const auto* migrations = new std::vector<std::string>{
      IdentityInventorySchema(),
      TemplateOperationSchema(),
      WorkflowSchema(),
  };
  return *migrations;
}

}  // namespace controlplane
