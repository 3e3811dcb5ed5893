// Quick measurements of the two paths a missed expert can take, for `mach bench` and for choosing how many
// experts the host computes (--host-experts auto): the host's memory read rate (what a CPU kernel streams
// weights at) and the host-to-device copy rate (what the RAM tier's copies into the GPU bank run at).
#pragma once

#include <cstdint>

#include "gpu/context.hpp"

namespace mach::experts {

// GB/s of `threads` threads (0: every hardware thread) summing their shares of a buffer of `bytes`: the best of
// five timed passes after one that touches the pages (what the memory can give; a median let one busy moment,
// e.g. the kernel writing back a freshly written checkpoint, halve the figure).
double probe_host_read(uint64_t bytes, unsigned threads = 0);

// GB/s of copies from a host-visible buffer of `bytes` into device memory (the GPU's own timestamps), the
// median of five timed rounds of four copies.
double probe_upload(gpu::Context& context, uint64_t bytes);

}  // namespace mach::experts
