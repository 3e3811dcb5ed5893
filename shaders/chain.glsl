// Two dispatches recorded back to back without a barrier between them (ops/chain.hpp, gpu::CommandList::
// chain_next): every workgroup of the producer counts itself finished in its link's word, and every workgroup
// of the consumer waits for the full count before it reads what the producer wrote. What the consumer may do
// before waiting is read data no dispatch of the chain writes (weights), which is what it is for: a
// dependent dispatch's launch, its first weight loads and the barrier's drain overlap the producer's last
// workgroups instead of following them.
//
// Before including: the spec constant CHAIN (bit 0: this dispatch waits, bit 1: it signals; 0 compiles the
// protocol away), a push block `p` with chain_links (the link waited for in bits 0-15, the link signalled in
// bits 16-31) and chain_expect (the producer's workgroups), and a `coherent volatile` uint buffer
// `chain_words`: word 0 is the error flag, link i's count of finished producer workgroups is word 1 + i.
// A link serves one producer and one consumer per recording: its owner zeroes the words before the chain
// (ops::chain_reset at the start of a step), so no workgroup has to set them back.
//
// Forward progress: a consumer workgroup spins while producer workgroups run, so the producer's workgroups
// must all have been started before the consumer's take the GPU. Devices start a dispatch's workgroups in
// order, and a later dispatch's after an earlier one's (NVIDIA; lavapipe runs a dispatch to completion
// before the next): ops only chain on devices known to (ops::chaining_supported). The spin is bounded all
// the same: past CHAIN_SPIN_LIMIT polls the wait gives up and sets the error flag, which the model checks
// before its next step (an error that names $MACH_CHAIN=0) instead of hanging the GPU.
#ifndef MACH_CHAIN_GLSL
#define MACH_CHAIN_GLSL

const uint CHAIN_WAIT = 1u, CHAIN_SIGNAL = 2u;
const uint CHAIN_SPIN_LIMIT = 1u << 20;  // about a second of polls on an H200

// Every invocation calls it, in uniform control flow.
void chain_wait() {
  if ((CHAIN & CHAIN_WAIT) == 0u) return;
  if (gl_LocalInvocationIndex == 0u) {
    const uint link = 1u + (p.chain_links & 0xffffu);
    uint spins = 0u;
    while (chain_words[link] < p.chain_expect) {
      // (Once one wait gave up, the others stop at once: the step is lost either way.)
      if (++spins == CHAIN_SPIN_LIMIT || chain_words[0] != 0u) {
        atomicOr(chain_words[0], 1u);
        break;
      }
    }
    memoryBarrierBuffer();
  }
  barrier();
  memoryBarrierBuffer();
}

// Every invocation calls it, in uniform control flow, after its last write.
void chain_signal() {
  if ((CHAIN & CHAIN_SIGNAL) == 0u) return;
  memoryBarrierBuffer();
  barrier();
  if (gl_LocalInvocationIndex == 0u) atomicAdd(chain_words[1u + (p.chain_links >> 16)], 1u);
}

#endif
