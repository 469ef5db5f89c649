#include "storaged/buffer_pool.h"

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace storaged {
namespace {

// A buffer's capacity tells a reused one (it keeps its memory) from a fresh
// one; addresses do not, since malloc hands freed memory out again.
TEST(BufferPoolTest, ReturnedBuffersComeBackWithTheirMemory) {
  BufferPool pool(2);
  std::shared_ptr<std::string> a = pool.Take(4 << 20);
  ASSERT_EQ(a->size(), 4u << 20);
  a.reset();
  std::shared_ptr<std::string> b = pool.Take(1);
  EXPECT_EQ(b->size(), 1u);
  EXPECT_GE(b->capacity(), 4u << 20);
  std::shared_ptr<std::string> c = pool.Take(1);  // none left: a fresh one
  EXPECT_LT(c->capacity(), 4u << 20);
}

TEST(BufferPoolTest, KeepsAtMostMaxFreeBuffers) {
  BufferPool pool(2);
  std::vector<std::shared_ptr<std::string>> taken;
  for (int i = 0; i < 4; ++i) taken.push_back(pool.Take(4 << 20));
  taken.clear();  // four come back, two are kept
  int reused = 0;
  for (int i = 0; i < 4; ++i) {
    taken.push_back(pool.Take(1));
    reused += taken.back()->capacity() >= (4u << 20);
  }
  EXPECT_EQ(reused, 2);
}

TEST(BufferPoolTest, BuffersMayOutliveThePool) {
  std::shared_ptr<std::string> kept;
  {
    BufferPool pool(1);
    kept = pool.Take(1000);
    (*kept)[999] = 'x';
  }
  EXPECT_EQ((*kept)[999], 'x');
  kept.reset();  // returns to the pool's state, which it keeps alive
}

}  // namespace
}  // namespace storaged
