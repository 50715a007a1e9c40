/* io_uring: what the core's io_uring parts share (internal). */
#ifndef AIOTK_URING_H
#define AIOTK_URING_H

#include "aiotk.h"

#ifdef AIOTK_HAVE_BPF
/* The loaded object behind a viewer: kview.bpf.c and uring_view.bpf.c
 * are linked into one (CMakeLists.txt), so both views cost one load. */
struct kview_bpf;
struct kview_bpf *aiotk_kviewer_skel(aiotk_kviewer *v);
#endif

#endif
