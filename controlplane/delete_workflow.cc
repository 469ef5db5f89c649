#include "controlplane/delete_workflow.h"

#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "controlplane/workflow_util.h"
#include "imagetemplates/v1/image_templates.pb.h"

namespace controlplane {

namespace v1 = imagetemplates::v1;

absl::Status DeleteWorkflow::Run(OperationContext& context) {
  const std::string template_id = context.operation().image_template_id();
  // Deletes run to the end even if a cancel slipped through.
  const auto kind = OperationContext::StepKind::kUndo;
  RETURN_IF_ERROR(context.RunStep(
      "delete_images", "",
      [&] {
        return DeleteReplicas(templates_, nodes_, template_id,
                              context.stop_flag());
      },
      kind));
  return context.RunStep(
      "delete_record", "",
      [&] {
        return templates_
            ->MutateTemplate(template_id,
                             [&](TemplateTransaction& txn) {
                               v1::ImageTemplate& t = txn.image_template();
                               t.set_status(v1::IMAGE_TEMPLATE_STATUS_DELETED);
                               t.clear_locations();
                               *t.mutable_update_time() =
                                   ToTimestamp(NowMicros());
                               return absl::OkStatus();
                             })
            .status();
      },
      kind);
}

}  // namespace controlplane
