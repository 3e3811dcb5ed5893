#include "ops/reference/activation.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace mach::ref {
namespace {

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

double apply(double g, double u, const ops::GluParams& p) {
  switch (p.kind) {
    case ops::GluKind::swiglu:
      if (p.limit > 0) {
        g = std::min(g, double(p.limit));
        u = std::clamp(u, -double(p.limit), double(p.limit));
      }
      return g * sigmoid(g) * u;
    case ops::GluKind::swiglu_oai:
      g = std::min(g, double(p.limit));
      u = std::clamp(u, -double(p.limit), double(p.limit));
      return (u + 1) * g * sigmoid(p.alpha * g);
    case ops::GluKind::geglu: {
      const double inner = std::sqrt(2.0 / std::numbers::pi) * (g + 0.044715 * g * g * g);
      return 0.5 * g * (1 + std::tanh(inner)) * u;
    }
  }
  return 0;
}

}  // namespace

void glu(std::span<const float> gate, std::span<const float> up, std::span<float> out, const ops::GluParams& p) {
  const uint64_t I = p.width;
  for (uint64_t t = 0; t < p.tokens; ++t) {
    for (uint64_t i = 0; i < I; ++i) {
      double g = 0, u = 0;
      switch (p.layout) {
        case ops::GluLayout::separate: g = gate[t * I + i], u = up[t * I + i]; break;
        case ops::GluLayout::fused: g = gate[t * 2 * I + i], u = up[t * 2 * I + I + i]; break;
        case ops::GluLayout::interleaved: g = gate[t * 2 * I + 2 * i], u = up[t * 2 * I + 2 * i + 1]; break;
      }
      out[t * I + i] = static_cast<float>(apply(g, u, p));
    }
  }
}

}  // namespace mach::ref
