#include "runtime/gpu_bridge.hpp"

#include <fmt/format.h>
#include <pthread.h>

#include <asio/error.hpp>
#include <asio/use_awaitable.hpp>
#include <cassert>
#include <chrono>
#include <system_error>
#include <vector>

#include "gpu/vk_check.hpp"

namespace mach::runtime {

namespace detail {
void cancel_gpu_wait(GpuWait* wait) { wait->bridge->cancel(wait); }
}  // namespace detail

const char* gpu_wait_strategy_name(GpuWaitStrategy strategy) {
  switch (strategy) {
    case GpuWaitStrategy::automatic: return "automatic";
    case GpuWaitStrategy::wait_any: return "wait_any";
    case GpuWaitStrategy::next_value: return "next_value";
  }
  return "?";
}

namespace {

GpuWaitStrategy resolve(GpuWaitStrategy strategy, VkPhysicalDevice physical) {
  if (strategy != GpuWaitStrategy::automatic) return strategy;
  VkPhysicalDeviceDriverProperties driver{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
  VkPhysicalDeviceProperties2 props{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, &driver};
  vkGetPhysicalDeviceProperties2(physical, &props);
  return driver.driverID == VK_DRIVER_ID_MESA_LLVMPIPE ? GpuWaitStrategy::next_value : GpuWaitStrategy::wait_any;
}

}  // namespace

GpuBridge::GpuBridge(asio::io_context& io, gpu::Context& context, GpuWaitStrategy strategy)
    : io_(io),
      context_(context),
      strategy_(resolve(strategy, context.physical_device())),
      alive_(std::make_shared<bool>(true)) {
  if (strategy_ == GpuWaitStrategy::wait_any) {
    VkSemaphoreTypeCreateInfo type{VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO};
    type.semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE;
    type.initialValue = 0;
    VkSemaphoreCreateInfo info{VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO, &type};
    gpu::vk_check(vkCreateSemaphore(context_.device(), &info, nullptr, &wake_),
                  "vkCreateSemaphore (GPU bridge wake)");
  }
  waiter_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "mach-gpu-wait");
    run_waiter();
  });
}

GpuBridge::~GpuBridge() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  idle_.notify_one();
  // A failed signal means the device is lost, and then the waiter has already returned.
  if (wake_) (void)signal_wake();
  waiter_.join();
  alive_.reset();
  std::multimap<uint64_t, std::unique_ptr<detail::GpuWait>> pending;
  pending.swap(pending_);
  for (auto& [value, wait] : pending) {
    wait->complete(std::make_exception_ptr(Exception(
                       Errc::cancelled, fmt::format("GPU bridge shut down before ticket {} was reached", value))),
                   false);
  }
  if (wake_) vkDestroySemaphore(context_.device(), wake_, nullptr);
}

uint64_t GpuBridge::waiter_wakeups() const {
  std::lock_guard lock(mutex_);
  return wakeups_;
}

asio::awaitable<void> GpuBridge::wait(gpu::Ticket ticket) {
  if (failure_) throw Exception(*failure_);
  if (reached(ticket)) co_return;
  co_await async_wait(ticket, asio::use_awaitable);
}

bool GpuBridge::reached(gpu::Ticket ticket) {
  if (ticket.value <= completed_) return true;
  uint64_t value = 0;
  const VkResult r = vkGetSemaphoreCounterValue(context_.device(), context_.timeline(), &value);
  if (r != VK_SUCCESS) return false;  // the waiter thread sees the same failure and reports it
  completed_ = std::max(completed_, value);
  return ticket.value <= completed_;
}

bool GpuBridge::start(gpu::Ticket ticket, std::unique_ptr<detail::GpuWait> op) {
  assert(ticket.value <= context_.last_submitted() && "waiting on a ticket that was never submitted");
  if (failure_) {
    op->complete(std::make_exception_ptr(Exception(*failure_)), false);
    return false;
  }
  if (reached(ticket)) {
    op->complete(nullptr, false);
    return false;
  }
  op->bridge = this;
  auto it = pending_.emplace(ticket.value, std::move(op));
  it->second->self = it;
  const VkResult r = wake_for(ticket.value);
  if (r != VK_SUCCESS) {
    on_failed(gpu::vk_error(r, "vkSignalSemaphore (GPU bridge wake)"));  // completes `op` too
    return false;
  }
  return true;
}

void GpuBridge::cancel(detail::GpuWait* wait) {
  // Its value stays in wanted_: the waiter wakes once for it and finds nothing to complete.
  auto op = std::move(wait->self->second);
  pending_.erase(wait->self);
  op->complete(std::make_exception_ptr(std::system_error(asio::error::operation_aborted)), true);
}

VkResult GpuBridge::wake_for(uint64_t value) {
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    wanted_.insert(value);
    // next_value: a busy waiter already waits for the next value, which no new ticket can precede.
    // wait_any: the waiter must look again when idle or blocked on a later value.
    wake = waiting_for_ == 0 || (strategy_ == GpuWaitStrategy::wait_any && value < waiting_for_);
  }
  if (!wake) return VK_SUCCESS;
  if (strategy_ == GpuWaitStrategy::next_value) {
    idle_.notify_one();
    return VK_SUCCESS;
  }
  return signal_wake();
}

VkResult GpuBridge::signal_wake() {
  uint64_t value = 0;
  {
    std::lock_guard lock(mutex_);
    value = ++wake_value_;
  }
  VkSemaphoreSignalInfo info{VK_STRUCTURE_TYPE_SEMAPHORE_SIGNAL_INFO};
  info.semaphore = wake_;
  info.value = value;
  return vkSignalSemaphore(context_.device(), &info);
}

void GpuBridge::run_waiter() {
  const VkDevice device = context_.device();
  const VkSemaphore semaphores[2] = {context_.timeline(), wake_};
  const std::weak_ptr<bool> alive = alive_;
  uint64_t seen = 0;  // the timeline value at the last wake
  std::unique_lock lock(mutex_);
  while (!stop_) {
    uint64_t values[2] = {0, wake_value_ + 1};
    VkSemaphoreWaitInfo info{VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO};
    info.pSemaphores = semaphores;
    info.pValues = values;
    bool poll_first = false;  // wait_any on a ticket
    if (strategy_ == GpuWaitStrategy::next_value) {
      if (wanted_.empty()) {
        waiting_for_ = 0;
        idle_.wait(lock, [&] { return stop_ || !wanted_.empty(); });
        continue;
      }
      values[0] = seen + 1;
      info.semaphoreCount = 1;
    } else if (wanted_.empty()) {
      values[0] = 0;
      info.semaphoreCount = 1;
      info.pSemaphores = &wake_;
      info.pValues = &values[1];
    } else {
      values[0] = *wanted_.begin();
      info.semaphoreCount = 2;
      info.flags = VK_SEMAPHORE_WAIT_ANY_BIT;
      poll_first = true;
    }
    waiting_for_ = values[0];
    lock.unlock();

    VkResult r = VK_SUCCESS;
    if (!(poll_first && poll(values[0], values[1]))) r = vkWaitSemaphores(device, &info, UINT64_MAX);
    uint64_t value = 0;
    if (r == VK_SUCCESS) r = vkGetSemaphoreCounterValue(device, context_.timeline(), &value);

    lock.lock();
    ++wakeups_;
    if (r != VK_SUCCESS) {
      waiting_for_ = 0;
      asio::post(io_, [this, alive, error = gpu::vk_error(r, "vkWaitSemaphores (GPU bridge)")] {
        if (!alive.expired()) on_failed(error);
      });
      return;
    }
    seen = value;
    bool any = false;
    while (!wanted_.empty() && *wanted_.begin() <= value) {
      wanted_.erase(wanted_.begin());
      any = true;
    }
    if (any) {
      asio::post(io_, [this, alive, value] {
        if (!alive.expired()) on_reached(value);
      });
    }
  }
}

bool GpuBridge::poll(uint64_t want, uint64_t wake) const {
  const VkDevice device = context_.device();
  const auto until = std::chrono::steady_clock::now() + gpu::kWaitPollWindow;
  do {
    uint64_t value = 0, woken = 0;
    // A failure here is left to the blocking wait, which reports it.
    if (vkGetSemaphoreCounterValue(device, context_.timeline(), &value) != VK_SUCCESS) return false;
    if (value >= want) return true;
    if (vkGetSemaphoreCounterValue(device, wake_, &woken) != VK_SUCCESS || woken >= wake) return false;
    std::this_thread::yield();
  } while (std::chrono::steady_clock::now() < until);
  return false;
}

void GpuBridge::on_reached(uint64_t value) {
  completed_ = std::max(completed_, value);
  std::vector<std::unique_ptr<detail::GpuWait>> done;
  const auto end = pending_.upper_bound(completed_);
  for (auto it = pending_.begin(); it != end; ++it) done.push_back(std::move(it->second));
  pending_.erase(pending_.begin(), end);
  for (auto& wait : done) wait->complete(nullptr, false);
}

void GpuBridge::on_failed(const Error& error) {
  failure_ = error;
  std::multimap<uint64_t, std::unique_ptr<detail::GpuWait>> pending;
  pending.swap(pending_);
  for (auto& [value, wait] : pending) wait->complete(std::make_exception_ptr(Exception(error)), false);
}

}  // namespace mach::runtime
