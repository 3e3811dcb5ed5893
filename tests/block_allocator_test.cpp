#include "engine/block_allocator.hpp"

#include <gtest/gtest.h>

#include <set>

namespace mach::engine {
namespace {

TEST(BlockAllocator, AllocatesDistinctBlocksAndRefusesWhenFull) {
  BlockAllocator a(10);
  auto first = a.allocate(6);
  ASSERT_TRUE(first);
  auto second = a.allocate(5);
  EXPECT_FALSE(second) << "only 4 blocks are free";
  EXPECT_EQ(a.free_blocks(), 4u) << "a refused allocation takes nothing";
  auto third = a.allocate(4);
  ASSERT_TRUE(third);
  std::set<uint32_t> all(first->begin(), first->end());
  all.insert(third->begin(), third->end());
  EXPECT_EQ(all.size(), 10u);
}

TEST(BlockAllocator, SharedBlocksFreeAfterTheLastRelease) {
  BlockAllocator a(2);
  auto blocks = a.allocate(1);
  ASSERT_TRUE(blocks);
  const uint32_t b = (*blocks)[0];
  a.retain(b);
  EXPECT_EQ(a.references(b), 2u);
  a.release(b);
  EXPECT_EQ(a.free_blocks(), 1u);
  a.release(b);
  EXPECT_EQ(a.free_blocks(), 2u);
}

}  // namespace
}  // namespace mach::engine
