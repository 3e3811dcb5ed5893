// Numerically safe scalar functions shared by the small ops. GLSL's built-in tanh may overflow to NaN for
// large arguments (Vulkan defines its precision through sinh/cosh), and cos/sin are only accurate on
// [-pi, pi], so these helpers keep every input in a safe range.
#ifndef MACH_MATH_FUNCS_GLSL
#define MACH_MATH_FUNCS_GLSL

// 2*pi split into three parts; the first two have 5 significant bits, so k * part is exact for k < 2^19
// and the reduction needs no fused multiply-add (Vulkan does not promise fma() is fused; lavapipe's is not).
const float kTwoPi1 = 6.25;                     // 25 / 4
const float kTwoPi2 = 0.033203125;              // 17 / 512
const float kTwoPi3 = -1.7817820413768004e-05;  // 2*pi - kTwoPi1 - kTwoPi2

// tanh through exp(-2|x|), which never overflows.
float safe_tanh(float x) {
  const float t = exp(-2.0 * abs(x));
  return sign(x) * (1.0 - t) / (1.0 + t);
}

float sigmoid(float x) { return 1.0 / (1.0 + exp(-x)); }

// log(1 + y) for y >= 0, accurate when y is tiny (no log1p in GLSL).
float log1p_pos(float y) {
  const float u = 1.0 + y;
  return u == 1.0 ? y : log(u) * (y / (u - 1.0));
}

// softplus(x) = log(1 + e^x), written so that neither branch overflows; torch switches to x above 20.
float softplus(float x) { return x > 20.0 ? x : max(x, 0.0) + log1p_pos(exp(-abs(x))); }

// The angle reduced to about [-pi, pi] (Cody-Waite), so that cos/sin stay accurate for the large angles of
// long positions: the error stays near 1e-6 rad for |a| < 2^19 * 2*pi (about 3.3M rad).
float reduce_angle(float a) {
  const float k = round(a * 0.159154943091895336);
  precise float r = a - k * kTwoPi1;
  r = r - k * kTwoPi2;
  r = r - k * kTwoPi3;
  return r;
}

#endif
