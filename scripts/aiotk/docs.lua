-- The Lua API's documentation, in one table: the REPL's help and help(fn)
-- read it, and docs/SCRIPTING.md's reference is generated from it (with
-- the policy hooks, whose text lives beside them in policy.lua), so the
-- two cannot drift. Each entry: name (how to reach it), call (its
-- signature), text (what it returns or does).
local M = {}

M.CONVENTION = "Every call that can fail at run time returns nil, message, code, errno (code: " ..
	"invalid, system, image, budget, impossible, occupied, stuck, nomem, notring, unsupported, " ..
	"empty, rollback (a failure whose undo failed too: the message names what stays changed and " ..
	"where), and from the process workflows in_flight, interrupted, plan, norings; errno: the " ..
	"failing system call's, 0 if none). Decide on code and errno, never on the message's text, " ..
	"which is for people. Wrong argument types raise a Lua error. Addresses are numbers (exact below 2^53); 64-bit cookies are \"0x...\" strings, " ..
	"and any 64-bit argument accepts either."

M.entries = {
	{ "aiotk.version", "aiotk.version", "the library's version string" },
	{ "aiotk.host", "aiotk.host()", "{cpus, page_size, formula, release, aio_max_nr, aio_nr} of this host" },
	{ "aiotk.geometry", "aiotk.geometry(n[, model])", "{nr, ring_len, pages, req_batch, capacity} of " ..
		"io_setup(n) (capacity: events a fresh ring holds before slots strand in per-CPU caches); " ..
		"model = {cpus=, page_size=, formula=\"current\"|\"legacy\"}, missing fields from this host" },
	{ "aiotk.min_n", "aiotk.min_n(ring_len[, model])", "the smallest n giving that ring, or nil, " ..
		"reason, \"impossible\"" },
	{ "aiotk.snapshot", "aiotk.snapshot(addr[, whole_area])", "a ring of this process: .addr " ..
		".ring_len .nr .head .tail .n .magic .id .wrapped .kernel_tail .ncaptured, #ring live events, " ..
		"ring:event(i), ring:events(), ring:slot(k), ring:captured() ({obj, data, opcode, fd, buf} " ..
		"per request captured in flight), ring:note_kernel{n=, kernel_tail=}, ring:at(addr) (a copy " ..
		"saved at another address: what a relocated ring is rebuilt from)" },
	{ "aiotk.ring", "aiotk.ring{addr=, nr=, head=, tail=, events={...}}", "a ring state built by hand (validated)" },
	{ "aiotk.converge", "aiotk.converge(ring_len[, model])", "{ctx, n, nr, calls}: a new context " ..
		"with exactly that ring length" },
	{ "aiotk.replay", "aiotk.replay(ctx, nr, head, tail[, {kind=, batch=, nudge=}])", "{completions, " ..
		"submits, nudges, kind}: the context's head and tail brought to the saved ones; nudge=false " ..
		"fails (stuck) a ring fuller than this kernel allows" },
	{ "aiotk.write_events", "aiotk.write_events(ctx, ring)", "copies saved events in (never the header)" },
	{ "aiotk.remap", "aiotk.remap(ctx, len, dest[, {placeholder=true}])", "moves a ring; refuses an " ..
		"occupied range, naming the occupant" },
	{ "aiotk.restore", "aiotk.restore(ring[, {model=, replay=, placeholder=, n=}])", "converge, replay, " ..
		"events and remap with rollback: {ctx, converge, replay, ns_converge, ns_replay, ns_events, " ..
		"ns_remap}; n: the io_setup n to try first (default the ring's recorded n)" },
	{ "aiotk.restore_all", "aiotk.restore_all(rings[, opts])", "every ring or none" },
	{ "aiotk.dump", "aiotk.dump(addrs|nil, dir)", "snapshots of this process's rings (all when nil) " ..
		"in a new image, written to dir" },
	{ "aiotk.image", "aiotk.image()", "a new image: img:add(ring), img:write(dir), img:rings() (copies), " ..
		"img:take_rings() (the rings moved out, the image left without any), " ..
		"img.cpus .page_size .release .pid .stopped_ns .nrings .warnings; io_uring instances: " ..
		"img:add_urings(set[, keep]) (set from viewer:uring_stopped, keep: booleans by index), " ..
		"img:urings() (as viewer:uring gives them, each map with saved: its byte count), " ..
		"img:uring_memory(i, j) (the saved bytes of mapping j of instance i), img.nurings" },
	{ "aiotk.read_image", "aiotk.read_image(dir)", "the image in dir/rings.img" },
	{ "aiotk.decode_image", "aiotk.decode_image(bytes)", "an image from its encoded bytes" },
	{ "aiotk.io_setup", "aiotk.io_setup(n)", "a new context of this process (its address)" },
	{ "aiotk.io_destroy", "aiotk.io_destroy(ctx)", "destroys a context of this process" },
	{ "aiotk.rings", "aiotk.rings()", "this process's AIO rings: {addr, ring_len} each" },
	{ "aiotk.mapping_at", "aiotk.mapping_at(addr, len)", "what this process maps over [addr, addr+len): " ..
		"{start, finish, perms, path, ring, placeholder, desc}, or false" },
	{ "aiotk.aio_nr", "aiotk.aio_nr()", "fs.aio-nr, fs.aio-max-nr" },
	{ "aiotk.set_aio_max_nr", "aiotk.set_aio_max_nr(n)", "sets fs.aio-max-nr (root)" },
	{ "aiotk.with_aio_headroom", "aiotk.with_aio_headroom(n, fn)", "runs fn with fs.aio-max-nr raised " ..
		"if needed, always put back (by aiotk's guardian if aiotk is killed meanwhile)" },
	{ "aiotk.now_ns", "aiotk.now_ns()", "a monotonic clock in nanoseconds" },
	{ "aiotk.hex", "aiotk.hex(v)", "\"0x...\" of a number" },
	{ "aiotk.json", "aiotk.json(value)", "JSON text, keys sorted (the same data, the same text); " ..
		"aiotk.null is JSON's null" },
	{ "aiotk.array", "aiotk.array([t])", "marks t as a list, so that it encodes as [] even when empty" },
	{ "aiotk.attach", "aiotk.attach(pid[, {cpu_latency=}])", "a target: process pid stopped until t:detach() " ..
		"(cpu_latency: CPUs held out of deep idle meanwhile, t.cpu_latency_held says whether), with the " ..
		"primitives as methods: t:rings(), t:snapshot(addr), t:restore(ring), t:converge(...), " ..
		"t:replay(...), t:remap(...), t:io_destroy(ctx), t:mapping_at(addr, len), t:capture(ring, obj), " ..
		"t:resubmit(ctx, ring), t:snapshot_many({ {addr=, ring_len=}, ... }) (a dump's rings read " ..
		"together), t:restore_all({ {ring=, n=, placeholder=, model=}, ... }) (rings rebuilt in order, " ..
		"those the restorer can do in one run inside the process), t:mappings([ranges]), " ..
		"t:find_refs({ {from=, len=, to=}, ... }[, max_bytes]) (every word of the process's writable " ..
		"private memory, or about its first max_bytes, and every thread's general register equal to an " ..
		"old ring's id or pointing into it: {kind (\"id\", \"pointer\"), move, old, value, addr, map, " ..
		"offset | tid, reg}, .scanned, .unread, .skipped (not read: past max_bytes)), " ..
		"t:rewrite_refs(refs[, back]) (each set to its value, or back, all or none), " ..
		"t:reloc_journal({ {from=, len=, to=, to_len=[, live_at=, live_compat=]}, ... }), " ..
		"t:reloc_journal_read() and t:reloc_journal_remove() (the relocation journal at " ..
		"0x3a1060000000: what a relocating restore is swapping, until its commit), t:ring_mark(ctx), " ..
		"t:ring_unmark(ctx, compat) (the building mark), t:release() " ..
		"(its workspace back now rather than at detach); t.pid, t.stopped_ns, t.stopped_at_ns (when the stop began, core.now_ns's clock), t.dead" },
	{ "aiotk.maps", "aiotk.maps(pid)", "every mapping of process pid as t:mappings() gives them, read " ..
		"without stopping it" },
	{ "aiotk.self", "aiotk.self()", "this process as a target (the one aiotk's functions use); " ..
		"self:pin() keeps this thread on its CPU until self:release(), so a series of replays " ..
		"pins once (as aiotk bench does)" },
	{ "aiotk.simulate", "aiotk.simulate(model)", "a simulated kernel as a target (io_setup sized by " ..
		"model): sim:converge(len[, guess_model]), sim.simulated_contexts" },
	{ "aiotk.joined_ranges", "aiotk.joined_ranges(ranges[, skip])", "ranges ({ {addr=, len=}, ... }) in " ..
		"address order with those that touch joined ({ addr, len, members }), indexes in skip left out: " ..
		"the placeholders a restore holds" },
	{ "aiotk.with_process", "aiotk.with_process(pid, fn[, {cpu_latency=}])", "fn(target) with the process stopped (cpu_latency: CPUs held out of deep idle meanwhile); always let go" },
	{ "aiotk.dump_process", "aiotk.dump_process(pid, dir[, {policy=, area=}])", "the image of pid's " ..
		"rings and io_uring instances (with their ring memory), and a report: per ring address {unreaped, " ..
		"in_flight} when stopped, waited_ms, urings {fd, in_flight, unreaped}" },
	{ "aiotk.restore_process", "aiotk.restore_process(pid, rings[, {replace=, policy=, plan=, on_ring=}])",
		"all or nothing; on_ring(i, ring, result, target) after each ring" },
	{ "aiotk.verify_process", "aiotk.verify_process(pid, img)", "differences, {kernel_view, " ..
		"kernel_view_error, stopped_ns}: pid's rings and io_uring instances (by fd) against img, ring " ..
		"side and kernel side; require \"aiotk.uring_verify\".compare(out, img_list, img_mem, live_list, " ..
		"live_mem) compares instance lists (mem(i, j): mapping j's bytes)" },
	{ "aiotk.view", "aiotk.view(pid|target)", "the live view of `aiotk show -p` (prints as its table): " ..
		"per ring addr, nr, head, tail and from the kernel n, kernel_tail, in_flight, pending; urings: per " ..
		"io_uring instance viewer:uring's fields with flag_names, sqpoll {tid, cpu, idle_jiffies}, " ..
		"buf_rings {bgid, addr}, maps with their kind (sq_ring, cq_ring, sqes, buf_ring), reqs with op, " ..
		"rebuildable and why not, timeouts with op, flag_names, count_left, rebuildable and why not, " ..
		"ring_fds, buffer_groups (null without the kernel view)" },
	{ "aiotk.uring", "require \"aiotk.uring\"", "io_uring names and rules: uring.op_name(opcode), " ..
		"uring.flag_names(flags), uring.rebuild(req, instance) (the SQE facts a restore submits again, or nil, why; " ..
		"a RECV from provided buffers by the instance's groups), uring.multishot(req), " ..
		"uring.rebuild_timeout(timeout, instance) (the same for a timeout in flight), " ..
		"uring.row(instance), uring.text(row)" },
	{ "aiotk.uring_restore", "require \"aiotk.uring_restore\"", "io_uring instances restored into a " ..
		"running process: uring_restore.restore_process(pid, img[, {policy=}]) (all or nothing: per instance " ..
		"{fd, exact, sq_shift, cq_shift, nops, copies, polls, timeouts, socks, ns_*}, .stopped_ns), uring_restore.verdicts(img, " ..
		"policy) (what aiotk check says: action exact, rebase or refused, why)" },
	{ "aiotk.core.uring_rebuild", "aiotk.core.uring_rebuild(t, img, i[, {exact=, polls=, timeouts=, socks=, slot=, keep_journal=}])", "instance i of " ..
		"img made again in target t (stopped; in the REPL: t = aiotk.attach(pid)), at its fd and addresses, " ..
		"ring memory back, counters exact or rebased (liburing's copies moved), polls ({user_data, fd, events, " ..
		"multishot, level, fixed_file}, as uring.rebuild gives them) and timeouts ({user_data, ts_ns, flags, off}, " ..
		"as uring.rebuild_timeout gives them) and socks ({opcode, user_data, fd, fixed_file, addr, addr2, len, " ..
		"op_flags, ioprio, buffer_select, buf_group}: ACCEPT and RECV, as uring.rebuild gives them) armed: {fd, sq_shift, cq_shift, nops, " ..
		"copies, ns_setup, ns_place, ns_counters, ns_memory, ns_copies, journal_at, journal_len}; nothing left on " ..
		"failure. slot (0-based, below core.URING_JOURNAL_SLOTS): where its journal goes; keep_journal: kept " ..
		"until core.uring_commit(t, results) (results in slot order) makes several instances final at once " ..
		"(-> true, journals left, why). core.uring_unbuild(t, img, i, result) takes it away again; " ..
		"core.uring_leftovers(t): what an aiotk killed mid-restore left in t (its journals from " ..
		"core.URING_JOURNAL_AT on) taken away, how many journals went; " ..
		"core.uring_check(img, i): whether it can be rebuilt; core.URING_REBUILT_FLAGS: the setup flags a " ..
		"rebuild makes; core.uring_image_shift(img, i, k): moved on by k NOPs (tests)" },
	{ "aiotk.core.kviewer", "aiotk.core.kviewer([{pin=DIR, mount=}])", "the kernel view (BPF): loaded, or " ..
		"with pin opened from its pin under bpffs directory DIR (made there when missing; mount: bpffs " ..
		"mounted on an empty DIR); viewer:info() says how {from_pin, pinned, replaced, mounted, no_bpffs, " ..
		"pin, pin_error, prog_ids, open_ns}; viewer:read(pid) gives per " ..
		"context {addr, n, nr, req_batch, kernel_tail, completed_events, reqs_available, cpu_available, " ..
		"in_flight, cancellable, pending}; viewer:uring(pid) gives per io_uring instance (fd order, the " ..
		"process not stopped) {fd, ino, flags, have (set: rings, files, bufs, issuer, reqs, timeouts, ring_fds, buffer_groups), sq_entries, " ..
		"cq_entries, sq_head, sq_tail, cq_head, cq_tail (ring memory), cached_sq_head, cached_cq_tail " ..
		"(the kernel's own), sq_dropped, cq_overflow, sq_flags, cq_flags, submitter_tid, sq_thread_pid, " ..
		"sq_cpu, sq_thread_idle (jiffies; SQPOLL only), eventfd {async, fd, id} if registered (fd: the process's fd for it), personalities and restricted (true if registered), nr_files, nr_bufs, " ..
		"files {slot, fd, path}, bufs {slot, addr, len}, in_flight, reqs {opcode, user_data, fd, file_fd, " ..
		"poll_events, flags, args (ACCEPT and RECV: {addr, addr2, len, op_flags, ioprio, file_slot, buf_group, done_io, mshot_len})}, maps {start, end, offset, dontfork}, cqes_off, sq_array_off (where the CQEs and the " ..
		"sq_array are in the ring mapping), completions_waiting (not yet in the CQ ring: task work a thread has yet to run), " ..
		"unlisted (requests in flight on no list the view reads: disk I/O, linked requests; have.unlisted when counted), " ..
		"timeouts_in_flight, cq_timeouts, timeouts {opcode, user_data, " ..
		"clockid, expires_ns, remaining_ns, flags, off, target_seq, repeats, ts_ns (the time given: a multishot's period)} (TIMEOUT and armed " ..
		"LINK_TIMEOUT), ring_fds {tid, index} (registered ring fds per thread), nbuffer_groups, " ..
		"buffer_groups {bgid, ring, entries, nbufs, head, tail, incremental, user_memory, addr (a ring in the program's memory: where; nil if not found), unrebuilt (why a restore does not make it again; nil: it does)}}; viewer:uring_stopped(t) reads the same of stopped " ..
		"target t's process with each mapping's bytes (a set: set:list(), set:memory(i, j), set:orphan_maps() (io_uring mappings of no instance open at an fd)); viewer:read_stopped(t[, whole_area]) reads stopped target t's " ..
		"contexts and rings in one call (reading:settled(), reading:take() -> contexts, rings); " ..
		"require \"aiotk.kernel\" caches one, pinned where the policy's kview_pin says " ..
		"(kernel.read(pid), kernel.read_stopped(t))" },
	{ "aiotk.core.kview_unpin", "aiotk.core.kview_unpin(dir[, all])", "removes this build's kernel-view " ..
		"pin under dir (core.kview_pin_name() names it), or with all every aiotk-* pin there; returns " ..
		"how many" },
	{ "aiotk.core.read_pack", "aiotk.core.read_pack(path)", "{[task] = image} of a CRIU dump's " ..
		"aiotk-rings.img (what the plugin recorded of each task, by its number in its PID namespace); " ..
		"core.image_pack(path) makes one (pack:add(task, img), pack:count(), pack:close())" },
	{ "aiotk.core.live_rings", "aiotk.core.live_rings(pid)", "{addr, ring_len, nr, head, tail} per ring " ..
		"of a running process, read without stopping it" },
	{ "aiotk.lab", "aiotk.lab.*", "a real libaio client for experiments: setup(n), complete(ctx, count, " ..
		"{data=}), reap(ctx, max), destroy(ctx), poll(ctx, k) (k POLLs in flight until :fire())" },
	{ "policy", "require \"aiotk.policy\"", "policy.load(file, dirs): the layered policy; " ..
		"policy.ANSWERS: what each deciding hook may answer" },
	{ "plan", "require \"aiotk.plan\"", "plan.make(rings, host, policy), plan.verdict(p), " ..
		"plan.budget(needed, host), plan.for_host(plan, host, policy, where), plan.follow(plan, rings)" },
	{ "criu", "require \"aiotk.criu\"", "criu.read(dir), criu.table(procs, dir), criu.fixup(...), " ..
		"criu.undo(dir), criu.plugin_verdicts(proc, host, policy, recorded), criu.plugin_images(dir) " ..
		"(what the plugin recorded, by task)" },
}

-- The entry for a name ("aiotk.snapshot", "snapshot") or for a function.
function M.find(what)
	local aiotk = require "aiotk"
	for _, e in ipairs(M.entries) do
		if type(what) == "string" and (e[1] == what or e[1] == "aiotk." .. what) then return e end
		if type(what) == "function" then
			local v = aiotk
			for part in e[1]:gmatch("[^.]+") do
				if part ~= "aiotk" then v = type(v) == "table" and v[part] or nil end
			end
			if v == what then return e end
		end
	end
end

function M.text(e) return e[2] .. "\n    " .. e[3] .. "\n" end

-- The policy hooks as policy.lua documents them: the comment block above
-- each hook or setting, with its allowed answers.
function M.hooks()
	local path = package.searchpath and package.searchpath("aiotk.policy", package.path)
	local f = path and io.open(path)
	if not f then return {} end
	local out, comment = {}, {}
	for line in f:lines() do
		local c = line:match("^%-%- ?(.*)")
		local name = line:match("^function M%.([%w_]+)") or line:match("^M%.([%w_]+) = ")
		if c then
			comment[#comment + 1] = c
		elseif name and name ~= "ANSWERS" and name ~= "load" then
			local inline = line:match("%-%- ?(.*)$")
			if inline then comment[#comment + 1] = inline end
			out[#out + 1] = { name = name, text = table.concat(comment, " "),
				answers = require("aiotk.policy").ANSWERS[name] }
			comment = {}
		else
			comment = {}
		end
	end
	f:close()
	return out
end

-- The reference part of docs/SCRIPTING.md.
function M.markdown()
	local out = { "## Reference (generated by `aiotk docs`)\n\n", M.CONVENTION, "\n\n",
		"| call | returns |\n|---|---|\n" }
	local function cell(s) return (s:gsub("|", "\\|")) end
	for _, e in ipairs(M.entries) do
		out[#out + 1] = string.format("| `%s` | %s |\n", cell(e[2]), cell(e[3]))
	end
	out[#out + 1] = "\n### Policy hooks and settings\n\n| hook | answers | what it decides |\n|---|---|---|\n"
	for _, h in ipairs(M.hooks()) do
		out[#out + 1] = string.format("| `%s` | %s | %s |\n", h.name,
			h.answers and table.concat(h.answers, ", ") or "-", cell(h.text))
	end
	return table.concat(out)
end

return M
