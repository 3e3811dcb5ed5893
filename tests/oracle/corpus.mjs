// The tokenizer test corpus: hand-written lines for each hazard, then seeded random mixtures of them.
// Only characters assigned by Unicode 14 are used: PCRE2 10.42 (Debian 12) knows no later version, while
// node's ICU may be newer, and an unassigned code point is \p{Cn} to one and \p{L} to the other.

const code = [
  "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
  "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  // dot product",
  "#include <vector>\nint main() {\n\tstd::vector<int> v{1, 2, 3};\n\treturn v.size();\n}\n",
  'const x = {"key": [1, 2.5, -3e10, true, null], "nested": {"a": "b\\n"}};',
  "<html><body><h1>Title</h1><table><tr><td>cell</td></tr></table></body></html>",
  "SELECT id, name FROM users WHERE age >= 21 AND name LIKE '%son' ORDER BY id DESC;",
  "git commit -m \"fix: don't crash\" && ./scripts/test.sh --timeout=900 2>&1 | tee log.txt",
  "fn main() -> Result<(), Box<dyn Error>> { let s: &str = \"héllo\"; println!(\"{s:?}\"); Ok(()) }",
  "    if (x != y) {\r\n        return;\r\n    }\r\n",
  "λx. λy. x y ≡ ∀a ∈ A: a ≤ b → ¬(a > b) ∧ ∑ᵢ xᵢ² ≈ ∞",
  "https://example.com/path/to/page?query=value&other=123#frag",
  "user@example.org, 192.168.0.1:8080, /usr/local/bin/mach --port=8000",
];

const prose = [
  "The quick brown fox jumps over the lazy dog.",
  "I'm sure it's what they've said: we'll see, you'd know, she's here, don't.",
  "THEY'RE LOUD AND IT'S WHAT WE'VE HEARD, I'LL SAY, HE'D KNOW.",
  "Hello world",
  " Hello world",
  "Hello  world",
  "Mr. O'Neil's café—naïve façade, coöperate, résumé, jalapeño, São Paulo, Zürich.",
  "It was the best of times, it was the worst of times, it was the age of wisdom...",
  "«Guillemets», „Anführungszeichen“, ‘single’ and “double” quotes, and the ellipsis…",
];

const unicode = [
  "e\u0301 vs \u00e9, A\u030a vs \u00c5, n\u0303 vs \u00f1",  // decomposed vs composed: NFC matters
  "\ufb01nance \u2126 \u212b \u1e9b\u0323",  // compatibility characters
  "Привет, мир! Как дела?",
  "Γειά σου Κόσμε, αβγδε ΑΒΓΔΕ",
  "مرحبا بالعالم، كيف حالك؟",
  "שלום עולם",
  "नमस्ते दुनिया, आप कैसे हैं?",
  "สวัสดีชาวโลก",
  "Tiếng Việt có dấu: Người, đường, ở, ữ",
  "한국어 문장입니다. 안녕하세요!",
  "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
  "zero\u200bwidth\u200cjoin\u200dhere, soft\u00adhyphen",
  "\u2581leading metaspace and \u0120 byte-level G",
  "control\u0001chars\u0007and\u001fdel\u007f",
  "bom\ufeffinside and nel\u0085here and line\u2028sep",
  "ſ long s: 'ſ and 'S and 'K (K kelvin)",
];

const emoji = [
  "🤖🎉👍🏽 family: 👨‍👩‍👧‍👦 flags: 🇯🇵🇺🇸 heart: ❤️ ✔️",
  "I ❤ emoji 😀😃😄😁😆😅😂🤣",
  "🧑‍💻 writes code; 🏳️‍🌈 flies; 👩🏿‍🔬 tests",
];

const cjk = [
  "你好，世界！今天天气很好。",
  "机器学习是人工智能的一个分支。",
  "日本語のテキストです。ひらがな、カタカナ、漢字。",
  "東京タワーは１９５８年に完成しました。",
  "中文English混合text测试123数字",
];

const whitespace = [
  "   ",
  " ",
  "\n",
  "\n\n\n",
  "a\n\nb\n\n\nc",
  "\t\ttabs\t\tand  spaces  ",
  "trailing spaces    ",
  "    leading spaces",
  "line1\r\nline2\r\n\r\nline3",
  "mixed \t \n \r\n  \u00a0 \u3000 \u2003 whitespace",
  " ".repeat(40) + "x",
  "\n".repeat(33) + "y",
  "word" + " ".repeat(17) + "\n" + "\t".repeat(5) + "end",
];

const numbers = [
  "1234567890",
  "3.14159265358979 and 2.71828",
  "1,000,000 and 1 000 000 and 1.000.000",
  "-42 +17 0x1F 0b1010 1e-9 6.02e23",
  "Dates: 2024-01-15, 15/01/2024, 12:34:56.789",
  "٠١٢٣٤٥٦٧٨٩ and ०१२३ and 一二三 and ①②③ and ⅠⅡⅢ",
  "v1.2.3-rc.4+build.567",
];

const specials = [
  "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
  "<think>\nreasoning here\n</think>\n\nanswer",
  "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
  "text<|endoftext|>more text",
  "<|start|>assistant<|channel|>analysis<|message|>thinking<|end|>",
  "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
  "<bos><eos><pad> <unk> <mask>",
  "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜>hello<｜end▁of▁sentence｜>",
  "partial <|im_ and <|im_end and im_end|> and <think and </think",
  "<|im_end|><|im_end|><|im_start|>",
  "x<|im_start|>y",
  " <|im_start|> spaced ",
  "<table><tr><td>Gemma html tokens</td></tr></table><h1>h</h1>",
  "<0x41> <0xFF> literal byte token names",
];

const longWords = [
  "supercalifragilisticexpialidocious antidisestablishmentarianism",
  "a".repeat(300),
  "ab".repeat(150),
  "Donaudampfschifffahrtsgesellschaftskapitänswitwe",
  "pneumonoultramicroscopicsilicovolcanoconiosis".repeat(3),
  "aGVsbG8gd29ybGQgdGhpcyBpcyBiYXNlNjQgZW5jb2RlZCB0ZXh0IGZvciB0ZXN0aW5n/+==",
  "0123456789".repeat(20),
  "!!!???...,,,;;;:::---___===+++***&&&^^^%%%$$$###@@@",
  "😀".repeat(50),
  "中".repeat(100),
];

const fragments = [...code, ...prose, ...unicode, ...emoji, ...cjk, ...whitespace, ...numbers, ...specials, ...longWords];

const alphabets = [
  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
  "0123456789",
  " \t\n\r",
  "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
  "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿ",
  "абвгдежзийклмнопрстуфхцчшщъыьэюя",
  "αβγδεζηθικλμνξοπρστυφχψω",
  "的一是不了人我在有他这为之大来以个中上们",
  "あいうえおかきくけこアイウエオカキクケコ",
  "가나다라마바사아자차카타파하",
  "😀😎🚀🌍🔥💡✨🎵",
  "\u0301\u0308\u0323",  // combining marks
  "\u00a0\u3000\u2009\u200b",
];

// mulberry32: a small seeded PRNG so the corpus is the same on every run.
function rng(seed) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function buildCorpus() {
  const lines = [...fragments];
  const random = rng(20240601);
  const pick = (arr) => arr[Math.floor(random() * arr.length)];
  for (let i = 0; i < 300; ++i) {  // mixtures of whole fragments
    const n = 2 + Math.floor(random() * 4);
    const parts = [];
    for (let k = 0; k < n; ++k) parts.push(pick(fragments));
    lines.push(parts.join(pick(["", " ", "\n", "  ", "\t"])));
  }
  for (let i = 0; i < 300; ++i) {  // random characters: words, runs and script changes at odd places
    const len = 1 + Math.floor(random() * 60);
    let s = "";
    for (let k = 0; k < len; ++k) s += Array.from(pick(alphabets)).at(Math.floor(random() * 8));
    lines.push(s);
  }
  // A long document: one Gemma word (Gemma does not pre-split), many Qwen/GPT words.
  lines.push(Array.from({ length: 200 }, () => pick([...prose, ...code, ...cjk])).join(" "));
  return lines;
}
