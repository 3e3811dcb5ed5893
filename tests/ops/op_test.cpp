// Runs every registered op case (CaseSet::test) on the GPU and checks it against the CPU reference.
#include <gtest/gtest.h>

#include <regex>

#include "../gpu_fixture.hpp"
#include "op_case.hpp"

namespace mach::test {
namespace {

struct CaseName {
  size_t index;
  std::string name;
};

std::vector<CaseName> case_names() {
  std::vector<CaseName> names;
  const auto cases = all_cases(CaseSet::test);
  for (size_t i = 0; i < cases.size(); ++i) {
    std::string n = cases[i]->op() + "_" + cases[i]->params();
    n = std::regex_replace(n, std::regex("[^A-Za-z0-9]+"), "_");
    names.push_back({i, n + "_" + std::to_string(i)});
  }
  return names;
}

class OpTest : public ::testing::TestWithParam<CaseName> {};

TEST_P(OpTest, MatchesReference) {
  auto cases = all_cases(CaseSet::test);
  auto& op = *cases[GetParam().index];
  auto& context = gpu_context();
  if (!op.supported(context)) GTEST_SKIP() << "not supported on " << context.info().name;
  Rng rng(0x5eed0000u + GetParam().index);
  op.prepare(context, rng);
  auto cmd = context.begin_commands();
  cmd->begin();
  op.record(*cmd);
  context.wait(context.submit(*cmd));
  const CheckResult r = op.check(context);
  EXPECT_TRUE(r.guards_ok) << r.detail;
  EXPECT_LE(r.nmse, op.max_nmse()) << op.op() << " " << op.params() << " " << r.detail;
}

INSTANTIATE_TEST_SUITE_P(All, OpTest, ::testing::ValuesIn(case_names()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace mach::test
