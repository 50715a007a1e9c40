/* The iocb as aiotk writes one: the kernel's struct iocb, for the
 * workspace's and the restorer's replay requests and for resubmitted
 * ones. Apart from rebuild.h so that a libaio program (spec/c), whose
 * libaio.h declares a struct iocb of its own, can include that one. */
#ifndef AIOTK_IOCB_H
#define AIOTK_IOCB_H

#include "aio/rebuild/rebuild.h"

#include <linux/aio_abi.h>
#include <poll.h>

/* AIOTK_IOCB_LEN is its size in saved rings and images. */
_Static_assert(sizeof(struct iocb) == AIOTK_IOCB_LEN, "struct iocb");
#ifndef IOCB_CMD_POLL
#define IOCB_CMD_POLL 5 /* headers older than 4.18 */
#endif

/* A POLL replay request (POLLOUT on /dev/null's fd completes inside
 * io_submit), written word by word without memset: the restorer uses it
 * too. */
AIOTK_INLINE void aiotk_iocb_poll(volatile struct iocb *cb, uint32_t fd)
{
	volatile uint64_t *w = (volatile uint64_t *)cb;
	for (unsigned i = 0; i < sizeof(*cb) / sizeof(*w); i++)
		w[i] = 0;
	cb->aio_lio_opcode = IOCB_CMD_POLL;
	cb->aio_fildes = fd;
	cb->aio_buf = POLLOUT;
}

#endif
