#include "ops/weight_format.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

namespace mach::ops {
namespace {

uint64_t align16(uint64_t n) { return (n + 15) & ~uint64_t{15}; }

template <class T>
void store(std::vector<std::byte>& out, uint64_t offset, T value) {
  std::memcpy(out.data() + offset, &value, sizeof(T));
}

template <class T>
T load(std::span<const std::byte> in, uint64_t offset) {
  T value;
  std::memcpy(&value, in.data() + offset, sizeof(T));
  return value;
}

}  // namespace

std::string_view weight_type_name(WeightType type) {
  switch (type) {
    case WeightType::f32: return "f32";
    case WeightType::f16: return "f16";
    case WeightType::bf16: return "bf16";
    case WeightType::q8_0: return "q8_0";
    case WeightType::q4: return "q4";
  }
  return "?";
}

std::optional<WeightType> parse_weight_type(std::string_view name) {
  for (WeightType t : {WeightType::f32, WeightType::f16, WeightType::bf16, WeightType::q8_0, WeightType::q4})
    if (weight_type_name(t) == name) return t;
  return std::nullopt;
}

uint32_t group_size(WeightType type) {
  switch (type) {
    case WeightType::q8_0: return 32;
    case WeightType::q4: return 64;
    default: return 1;
  }
}

bool is_quantized(WeightType type) { return group_size(type) > 1; }

bool shape_fits(WeightType type, uint64_t rows, uint64_t cols) {
  return rows > 0 && cols > 0 && cols % group_size(type) == 0;
}

uint64_t scales_offset(WeightType type, uint64_t rows, uint64_t cols) {
  switch (type) {
    case WeightType::q8_0: return align16(rows * cols);
    case WeightType::q4: return align16(rows * cols / 2);
    default: return 0;
  }
}

uint64_t weight_bytes(WeightType type, uint64_t rows, uint64_t cols) {
  assert(shape_fits(type, rows, cols));
  switch (type) {
    case WeightType::f32: return align16(rows * cols * 4);
    case WeightType::f16:
    case WeightType::bf16: return align16(rows * cols * 2);
    case WeightType::q8_0: return scales_offset(type, rows, cols) + align16(rows * (cols / 32) * 2);
    case WeightType::q4: return scales_offset(type, rows, cols) + align16(rows * (cols / 64) * 4);
  }
  return 0;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0));  // inf/nan
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (abs < 0x38800000u) {
    // Subnormal half (or zero): value = abs_float / 2^-24, rounded to nearest even.
    float af;
    std::memcpy(&af, &abs, 4);
    const float scaled = af * 16777216.0f;  // exact: power-of-two scaling
    const uint32_t q = static_cast<uint32_t>(std::nearbyint(scaled));
    return static_cast<uint16_t>(sign | q);
  }
  const uint32_t mant = abs & 0x7fffffu;
  const uint32_t exp = (abs >> 23) - 127 + 15;
  uint32_t h = (exp << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) ++h;  // carries into the exponent correctly
  return static_cast<uint16_t>(sign | h);
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  uint32_t x = sign | (exp == 31 ? 0x7f800000u | (mant << 13) : ((exp - 15 + 127) << 23) | (mant << 13));
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1);
  return static_cast<uint16_t>(x >> 16);
}

float bf16_to_float(uint16_t b) {
  const uint32_t x = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

std::vector<std::byte> quantize(WeightType type, std::span<const float> src, uint64_t rows, uint64_t cols) {
  assert(src.size() == rows * cols && shape_fits(type, rows, cols));
  std::vector<std::byte> out(weight_bytes(type, rows, cols));
  const uint64_t so = scales_offset(type, rows, cols);
  switch (type) {
    case WeightType::f32:
      std::memcpy(out.data(), src.data(), rows * cols * 4);
      break;
    case WeightType::f16:
      for (uint64_t i = 0; i < rows * cols; ++i) store(out, i * 2, float_to_half(src[i]));
      break;
    case WeightType::bf16:
      for (uint64_t i = 0; i < rows * cols; ++i) store(out, i * 2, float_to_bf16(src[i]));
      break;
    case WeightType::q8_0:
      for (uint64_t r = 0; r < rows; ++r) {
        for (uint64_t g = 0; g < cols / 32; ++g) {
          const float* x = &src[r * cols + g * 32];
          float amax = 0;
          for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
          const uint16_t dh = float_to_half(amax / 127.0f);
          const float d = half_to_float(dh);
          store(out, so + (r * (cols / 32) + g) * 2, dh);
          for (int j = 0; j < 32; ++j) {
            const float q = d > 0 ? std::nearbyint(x[j] / d) : 0.0f;
            store(out, r * cols + g * 32 + j, static_cast<int8_t>(std::clamp(q, -127.0f, 127.0f)));
          }
        }
      }
      break;
    case WeightType::q4:
      for (uint64_t r = 0; r < rows; ++r) {
        for (uint64_t g = 0; g < cols / 64; ++g) {
          const float* x = &src[r * cols + g * 64];
          float lo = x[0], hi = x[0];
          for (int j = 1; j < 64; ++j) lo = std::min(lo, x[j]), hi = std::max(hi, x[j]);
          const uint16_t sh = float_to_half((hi - lo) / 15.0f), mh = float_to_half(lo);
          const float scale = half_to_float(sh), min = half_to_float(mh);
          store(out, so + (r * (cols / 64) + g) * 4, static_cast<uint32_t>(sh) | (static_cast<uint32_t>(mh) << 16));
          uint8_t q[64];
          for (int j = 0; j < 64; ++j) {
            const float v = scale > 0 ? std::nearbyint((x[j] - min) / scale) : 0.0f;
            q[j] = static_cast<uint8_t>(std::clamp(v, 0.0f, 15.0f));
          }
          const uint64_t base = (r * (cols / 64) + g) * 32;
          for (int j = 0; j < 32; ++j) store(out, base + j, static_cast<uint8_t>(q[j] | (q[j + 32] << 4)));
        }
      }
      break;
  }
  return out;
}

std::vector<float> dequantize(WeightType type, std::span<const std::byte> data, uint64_t rows, uint64_t cols) {
  assert(data.size() >= weight_bytes(type, rows, cols));
  std::vector<float> out(rows * cols);
  const uint64_t so = scales_offset(type, rows, cols);
  switch (type) {
    case WeightType::f32:
      std::memcpy(out.data(), data.data(), rows * cols * 4);
      break;
    case WeightType::f16:
      for (uint64_t i = 0; i < rows * cols; ++i) out[i] = half_to_float(load<uint16_t>(data, i * 2));
      break;
    case WeightType::bf16:
      for (uint64_t i = 0; i < rows * cols; ++i) out[i] = bf16_to_float(load<uint16_t>(data, i * 2));
      break;
    case WeightType::q8_0:
      for (uint64_t r = 0; r < rows; ++r)
        for (uint64_t c = 0; c < cols; ++c) {
          const float d = half_to_float(load<uint16_t>(data, so + (r * (cols / 32) + c / 32) * 2));
          out[r * cols + c] = d * static_cast<float>(load<int8_t>(data, r * cols + c));
        }
      break;
    case WeightType::q4:
      for (uint64_t r = 0; r < rows; ++r)
        for (uint64_t c = 0; c < cols; ++c) {
          const uint64_t g = r * (cols / 64) + c / 64;
          const uint32_t sm = load<uint32_t>(data, so + g * 4);
          const float scale = half_to_float(static_cast<uint16_t>(sm & 0xffffu));
          const float min = half_to_float(static_cast<uint16_t>(sm >> 16));
          const uint32_t j = c % 64;
          const uint8_t byte = load<uint8_t>(data, g * 32 + (j % 32));
          const uint32_t q = j < 32 ? (byte & 0xfu) : (byte >> 4);
          out[r * cols + c] = scale * static_cast<float>(q) + min;
        }
      break;
  }
  return out;
}

}  // namespace mach::ops
