// JSON mode's recognizer against nlohmann::json's parser (the oracle: a JSON library nobody here wrote) on
// hand-picked documents and on thousands of mutations of them, and the token table's allowed set against
// feeding every token by brute force.
#include "engine/json_constraint.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

namespace mach::engine {
namespace {

const std::vector<std::string> kDocs = {
    R"({})",
    R"({"a":1})",
    R"({"a": [1, -2.5e+3, 0, 0.25, -0, 1E9, true, false, null], "b": {"c": "d"}})",
    "{\"s\": \"esc \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\uD83D\\uDE00\"}",
    "{\"utf8\": \"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xED\x9F\xBF \xF4\x8F\xBF\xBF\"}",
    "{\n  \"nested\": [[[{}], []], {\"x\": [\"y\", {\"z\": 1.5}]}],\n  \"empty\": \"\"\n}",
    R"({"k":[{"a":[]},{"b":{}}],"n":-12345678901234567890})",
};

// A number too large for a double is valid JSON (Python and JavaScript parse 1e400 to infinity), but
// nlohmann stops at it (out_of_range 406) before reading the rest: the oracle cannot judge such a text.
bool oracle_overflows(const std::string& s) {
  try {
    (void)nlohmann::json::parse(s);
  } catch (const nlohmann::json::out_of_range& e) {
    return e.id == 406;
  } catch (const nlohmann::json::exception&) {
  }
  return false;
}

// The oracle: a complete JSON text whose top value is an object, from its first byte to its last.
bool oracle(const std::string& s) { return nlohmann::json::accept(s) && s.front() == '{' && s.back() == '}'; }

bool machine_accepts(const std::string& s) {
  JsonMachine m;
  return m.feed(s) && m.complete();
}

TEST(JsonMachine, AcceptsDocumentsAndEveryPrefix) {
  for (const auto& doc : kDocs) {
    ASSERT_TRUE(oracle(doc)) << doc;
    JsonMachine m;
    for (size_t i = 0; i < doc.size(); ++i) {
      ASSERT_FALSE(m.complete()) << doc << " at " << i;
      ASSERT_TRUE(m.feed(static_cast<uint8_t>(doc[i]))) << doc << " refused at " << i;
    }
    EXPECT_TRUE(m.complete()) << doc;
    EXPECT_FALSE(m.feed(' '));  // nothing after the object
    EXPECT_FALSE(m.feed('}'));
  }
}

TEST(JsonMachine, RefusesWhatIsNotAnObjectText) {
  for (const char* bad : {"[]", "\"a\"", "1", " {}", "\n{\"a\":1}", "{\"a\"}", "{\"a\":}", "{,}", "{\"a\":1,}", "{\"a\":01}", "{\"a\":1.}",
                          "{\"a\":.5}", "{\"a\":-}", "{\"a\":1e}", "{\"a\":tru}", "{\"a\":True}", "{'a':1}",
                          "{\"a\":\"\\x\"}", "{\"a\":\"\\uD800\"}", "{\"a\":\"\\uDC00\"}", "{\"a\":\"\x01\"}",
                          "{\"a\":\"\xC0\xAF\"}", "{\"a\":\"\xED\xA0\x80\"}", "{\"a\":\"\xF5\x80\x80\x80\"}",
                          "{\"a\":[1 2]}", "{\"a\":1]", "{\"a\":[1}"}) {
    EXPECT_FALSE(oracle(bad)) << bad;
    EXPECT_FALSE(machine_accepts(bad)) << bad;
  }
}

TEST(JsonMachine, LimitsWhitespaceRunsAndDepth) {
  JsonMachine m;
  ASSERT_TRUE(m.feed("{"));
  for (uint32_t i = 0; i < JsonMachine::kMaxWhitespace; ++i) ASSERT_TRUE(m.feed(' '));
  EXPECT_FALSE(m.feed('\n'));
  EXPECT_TRUE(m.feed("\"a\":"));  // a token resets the run
  for (uint32_t i = 0; i < JsonMachine::kMaxWhitespace; ++i) ASSERT_TRUE(m.feed(' '));
  JsonMachine deep;
  ASSERT_TRUE(deep.feed("{\"a\":"));
  for (uint32_t d = 1; d < JsonMachine::kMaxDepth; ++d) ASSERT_TRUE(deep.feed('[')) << d;
  EXPECT_FALSE(deep.feed('['));
}

// Mutations of the documents (a byte inserted, deleted or replaced, a span duplicated or cut) from an
// alphabet of JSON's own bytes, escapes and UTF-8 pieces: the machine must agree with the oracle on each.
TEST(JsonMachine, AgreesWithNlohmannOnMutations) {
  const std::string alphabet = std::string("{}[],:\"\\/ \n\tu0123456789abcdefABCDEF-+.eEtrufalsn") +
                               "\x01\x7f\x80\xBF\xC2\xC3\xA9\xE0\xED\xA0\x9F\xF0\xF4\x8F\x90\xF5";
  std::mt19937 gen(2026);
  int agreed_valid = 0, agreed_invalid = 0;
  for (int iter = 0; iter < 100000; ++iter) {
    std::string s = kDocs[gen() % kDocs.size()];
    const int edits = 1 + static_cast<int>(gen() % 3);
    for (int e = 0; e < edits && !s.empty(); ++e) {
      const size_t at = gen() % s.size();
      const char c = alphabet[gen() % alphabet.size()];
      switch (gen() % 5) {
        case 0: s.insert(s.begin() + at, c); break;
        case 1: s.erase(at, 1); break;
        case 2: s[at] = c; break;
        case 3: s.insert(at, s.substr(at, 1 + gen() % 6)); break;
        default: s.erase(at, 1 + gen() % 6); break;
      }
    }
    if (oracle_overflows(s)) continue;
    const bool want = oracle(s);
    ASSERT_EQ(machine_accepts(s), want) << "text: " << nlohmann::json(s).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
    (want ? agreed_valid : agreed_invalid)++;
    // A text the oracle accepts: no prefix of it was refused on the way (checked by machine_accepts), and a
    // refused text has a refused byte or stops short of complete.
  }
  EXPECT_GT(agreed_valid, 1000);  // the mutations kept enough valid texts to test that side
  EXPECT_GT(agreed_invalid, 1000);
}

TEST(JsonTokenTable, AllowsExactlyTheTokensTheMachineAccepts) {
  // A vocabulary like a byte-level BPE's: every single byte, and multi-byte pieces from JSON-ish text.
  std::vector<std::string> vocab;
  for (int b = 0; b < 256; ++b) vocab.push_back(std::string(1, static_cast<char>(b)));
  std::mt19937 gen(7);
  const std::vector<std::string> pieces = {"{\"", "\":", "\",", "\"}", "},", "[{", "}]", "true", "false", "null",
                                           "12", "0.", "e+", "\\u", "D8", "\\n", " \"", "  ", "\n ", "ab", "\xC3\xA9",
                                           "\xE2\x82", "\xAC\"", "-0", "1,", "],", ":[", ":{", "\"\"", "tr", "ue}"};
  for (int i = 0; i < 3000; ++i) {
    std::string t;
    const int n = 1 + static_cast<int>(gen() % 3);
    for (int j = 0; j < n; ++j) t += pieces[gen() % pieces.size()];
    vocab.push_back(t);
  }
  vocab.push_back("");  // a control token: never allowed
  const uint32_t stop = static_cast<uint32_t>(vocab.size());
  vocab.push_back("<|im_end|>");  // plain text inside a string, but a stop token is never text
  const JsonTokenTable table(vocab, {stop});
  std::vector<uint8_t> allowed;
  for (const auto& doc : kDocs) {
    JsonMachine m;
    for (size_t i = 0; i <= doc.size(); ++i) {
      table.allowed(m, allowed);
      for (uint32_t id = 0; id < vocab.size(); ++id) {
        JsonMachine copy = m;
        bool ok = !vocab[id].empty() && id != stop && copy.feed(vocab[id]);
        if (m.complete()) ok = id == stop;
        ASSERT_EQ(allowed[id] != 0, ok) << doc << " at " << i << ", token " << id;
      }
      if (i < doc.size()) ASSERT_TRUE(m.feed(static_cast<uint8_t>(doc[i])));
    }
  }
}

}  // namespace
}  // namespace mach::engine
