// An ImageStore for one test, in its own empty directory under TEST_TMPDIR.
#ifndef STORAGED_TESTING_TEMP_STORE_H_
#define STORAGED_TESTING_TEMP_STORE_H_

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "storaged/image_store.h"

namespace storaged {
namespace testing {

// Opens a store in TEST_TMPDIR/`name`, removing what an earlier run left
// there. On an error the test fails (naming it) and the result is null.
inline std::unique_ptr<ImageStore> OpenTempStore(
    const std::string& name, const ImageStoreOptions& options = {}) {
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
  std::filesystem::remove_all(dir);
  auto store = ImageStore::Open(dir, options);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(*store) : nullptr;
}

}  // namespace testing
}  // namespace storaged

#endif  // STORAGED_TESTING_TEMP_STORE_H_
