-- aiotk criu-hook: CRIU action script: fit rings at pre-restore, check at post-dump
local argparse = require "argparse"
local plugin = require "aiotk.criu_plugin"

local parser = argparse("aiotk criu-hook",
	"Run by CRIU as an action script (criu --action-script aiotk-criu-hook, or " ..
	"action-script in /etc/criu/*.conf, which runc and crun read), for where aiotk's CRIU " ..
	"plugin cannot be installed. Reads CRTOOLS_SCRIPT_ACTION and CRTOOLS_IMAGE_DIR. " ..
	"pre-restore: every ring's nr_req becomes the n recorded at dump or the smallest n for it " ..
	"on this host (rings grow under the policy's impossible hook), before CRIU reads the mm " ..
	"images. post-dump: records io_setup's n of each ring (kernel view) and fails the dump " ..
	"(CRIU lets the tasks run on) when requests in flight are not in CRIU's image, unless the " ..
	"policy's in_flight hook answers record. Other actions: nothing. Policy: the layered one, " ..
	"and the file $AIOTK_POLICY names.")
parser:parse({ ... })

local action, dir = os.getenv("CRTOOLS_SCRIPT_ACTION"), os.getenv("CRTOOLS_IMAGE_DIR")
if not action or not dir then
	io.stderr:write("aiotk criu-hook: CRTOOLS_SCRIPT_ACTION and CRTOOLS_IMAGE_DIR are not set; " ..
		"CRIU sets them when it runs an action script\n")
	return 2
end
local function log(level, msg) io.stderr:write("aiotk: ", level == "info" and "" or level .. ": ", msg, "\n") end
local ok, err = plugin.action(action, dir, log)
if not ok then
	log("error", tostring(err))
	return 1
end
return 0
