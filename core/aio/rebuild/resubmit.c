/* Requests in flight at dump that may never complete on their own (POLL on
 * an idle pipe or socket): captured with the ring, submitted again once it
 * is rebuilt, so their completions arrive later with the same iocb address
 * and data, as they would have. See docs/KERNEL-FACTS.md, "Requests in
 * flight". */
#define _GNU_SOURCE
#include "aio/rebuild/rebuild.h"
#include "aio/rebuild/iocb.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

int aiotk_ring_capture(aiotk_target *t, aiotk_ring *r, uint64_t obj,
		       aiotk_err *err)
{
	aiotk_captured *grown = realloc(r->captured, (r->ncaptured + 1) * sizeof(*grown));
	if (!grown)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory capturing a request");
	r->captured = grown;
	aiotk_captured *c = &r->captured[r->ncaptured];
	c->obj = obj;
	int rc = aiotk_peek(t, obj, c->iocb, AIOTK_IOCB_LEN, err);
	if (!rc)
		r->ncaptured++;
	return rc;
}

int aiotk_resubmit(aiotk_target *t, uint64_t ctx, const aiotk_ring *r,
		   aiotk_err *err)
{
	if (!r->ncaptured)
		return 0;
	size_t len = (size_t)r->ncaptured * sizeof(uint64_t);
	uint64_t scratch, *ptrs = malloc(len);
	if (!ptrs)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
	int rc = 0;
	for (uint32_t i = 0; !rc && i < r->ncaptured; i++) {
		ptrs[i] = r->captured[i].obj;
		rc = aiotk_poke(t, r->captured[i].obj, r->captured[i].iocb,
				AIOTK_IOCB_LEN, err);
	}
	if (!rc)
		rc = aiotk_scratch_map(t, aiotk_page_round(len), &scratch, err);
	if (!rc) {
		rc = aiotk_poke(t, scratch, ptrs, len, err);
		long got = rc ? 0 : aiotk_sys(t, SYS_io_submit, (long)ctx,
					      (long)r->ncaptured, (long)scratch, 0, 0, 0);
		if (!rc && got != (long)r->ncaptured)
			rc = aiotk_fail(err, AIOTK_ESYS, got < 0 ? (int)-got : 0,
					"ring 0x%llx: resubmitting %u captured request(s) in flight at dump: io_submit gave %ld (%s); is the file descriptor the iocb names still open?",
					(unsigned long long)r->addr, r->ncaptured, got,
					got < 0 ? strerror((int)-got) : "some refused");
		aiotk_scratch_unmap(t, scratch, aiotk_page_round(len));
	}
	free(ptrs);
	return rc;
}
