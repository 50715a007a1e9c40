/* Holding the CPUs out of deep idle while a process is stopped.
 *
 * Every ptrace stop and resume wakes a thread or aiotk on some CPU; an
 * idle CPU in a deep state (on this VM, halted: haltpoll with
 * guest_halt_poll_ns=0) takes tens of microseconds to wake. A PM QoS
 * request of 0 us on /dev/cpu_dma_latency makes cpuidle choose polling
 * for as long as the descriptor is open (measured here: dump and live
 * restore medians 8-20% lower, and their spread narrower). The kernel
 * drops the request when the descriptor closes, aiotk's death included,
 * so nothing outlives it. Root only; without it aiotk only runs slower. */
#include "target/target.h"

#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>

int aiotk_cpu_latency_hold(void)
{
	int fd = open("/dev/cpu_dma_latency", O_WRONLY | O_CLOEXEC);
	int32_t none = 0;
	if (fd >= 0 && write(fd, &none, sizeof(none)) != (ssize_t)sizeof(none)) {
		close(fd);
		fd = -1;
	}
	return fd;
}

void aiotk_cpu_latency_release(int fd)
{
	if (fd >= 0)
		close(fd);
}
