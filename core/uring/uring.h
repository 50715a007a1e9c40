/* io_uring: what the core's io_uring parts share (internal). */
#ifndef AIOTK_URING_H
#define AIOTK_URING_H

#include "aiotk.h"

#endif
