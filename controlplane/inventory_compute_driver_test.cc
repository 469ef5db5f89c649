#include "controlplane/inventory_compute_driver.h"

#include <memory>
#include <string>

#include "controlplane/credential_cipher.h"
#include "controlplane/migrations.h"
#include "controlplane/sqlite_database.h"
#include "controlplane/sqlite_inventory_store.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;

TEST(InventoryComputeDriverTest, PowerStateLivesInTheInventory) {
  auto db = *SqliteDatabase::Open(":memory:", Migrations());
  auto cipher = *CredentialCipher::Create(std::string(32, 'k'));
  SqliteInventoryStore inventory(db.get(), cipher.get());
  InventoryComputeDriver driver(&inventory);
  const absl::Duration t = absl::Seconds(5);
  EXPECT_EQ(driver.GetPowerState("00000000-0000-4000-8000-000000000000", t)
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(driver.PowerOff("00000000-0000-4000-8000-000000000000", t).code(),
            absl::StatusCode::kNotFound);

  ASSERT_TRUE(
      db->Transaction([](SqliteConnection& conn) -> absl::Status {
          for (const char* sql :
               {"INSERT INTO accounts (id, name, is_operator, create_time) "
                "VALUES ('a', 'a', 0, 0)",
                "INSERT INTO datacenters (name, description, create_time) "
                "VALUES ('dal10', '', 0)",
                "INSERT INTO servers (id, account_id, type, hostname, domain, "
                "datacenter, "
                "state, power_state, configuration, create_time, update_time) "
                "VALUES "
                "('s1', 'a', 1, 'web', '', 'dal10', 2, 1, x'', 0, 0)"}) {
            auto stmt = conn.Prepare(sql);
            if (!stmt.ok()) return stmt.status();
            absl::Status status = stmt->Run();
            if (!status.ok()) return status;
          }
          return absl::OkStatus();
        }).ok());
  EXPECT_EQ(*driver.GetPowerState("s1", t), v1::POWER_STATE_RUNNING);
  ASSERT_TRUE(driver.PowerOff("s1", t).ok());
  ASSERT_TRUE(driver.PowerOff("s1", t).ok());  // already off: a no-op
  EXPECT_EQ(*driver.GetPowerState("s1", t), v1::POWER_STATE_STOPPED);
  EXPECT_EQ(inventory.ReadServer("s1")->state(), v1::SERVER_STATE_ACTIVE);
  ASSERT_TRUE(driver.PowerOn("s1", t, nullptr).ok());
  EXPECT_EQ(*driver.GetPowerState("s1", t), v1::POWER_STATE_RUNNING);
}

}  // namespace
}  // namespace controlplane
