-- The Debian package, built as a user would (cmake with prefix /usr, cpack
-- -G DEB) into a scratch directory: its contents and Depends, apt can
-- install it, and from its files aiotk runs the demo, man aiotk names
-- every command, a C program builds with pkg-config, a CMake project with
-- find_package(aiotk), plain luajit can require "aiotk", and real CRIU loads
-- its plugin. The package
-- is unpacked into a directory (dpkg-deb -x), not installed: the machine
-- is left as it was.
local helper = require "helper"
local sh = helper.sh

local SRC = os.getenv("PWD")
local MULTIARCH = (select(2, sh("dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch"))):match("[%w_-]+")

describe("the Debian package", function()
	local T, deb, root
	setup(function()
		T = helper.tmpdir()
		local ok, out = sh(string.format("cmake -S %s -B %s/b -DCMAKE_INSTALL_PREFIX=/usr >/dev/null && " ..
			"cmake --build %s/b -j2 >/dev/null && cd %s/b && cpack -G DEB", SRC, T, T, T))
		assert(ok, "building the package: " .. out:sub(-2000))
		deb = out:match("package: (%S+%.deb) generated") or (select(2, sh("ls " .. T .. "/b/*.deb")):match("%S+"))
		assert(deb and deb:match("%.deb$"), "no .deb: " .. out:sub(-500))
		root = T .. "/root"
		assert(sh("dpkg-deb -x " .. deb .. " " .. root))
	end)
	teardown(function() if T then helper.rmdir(T) end end)

	it("holds the program, scripts, library, pkg-config, CMake package, headers, man page, completion and the CRIU plugin", function()
		local _, list = sh("dpkg-deb -c " .. deb)
		for _, path in ipairs {
			"./usr/bin/aiotk", "./usr/bin/aiotk-criu-hook", "./usr/lib/criu/aiotk_criu.so",
			"./usr/lib/" .. MULTIARCH .. "/libaiotk.so.0", "./usr/lib/" .. MULTIARCH .. "/pkgconfig/aiotk.pc",
			"./usr/lib/" .. MULTIARCH .. "/cmake/aiotk/aiotkConfig.cmake", "./usr/include/aiotk.h",
			"./usr/share/man/man1/aiotk.1", "./usr/share/bash-completion/completions/aiotk",
			"./usr/share/lua/5.1/aiotk/init.lua", "./usr/lib/" .. MULTIARCH .. "/lua/5.1/aiotk/core.so",
			"./usr/libexec/aiotk/aio_workload", "./usr/share/aiotk/scripts/show.lua",
			"./usr/share/aiotk/scripts/examples/commands/ring-report.lua",
		} do
			assert.is_truthy(list:find(path, 1, true), path .. " is not in the package")
		end
	end)

	it("depends on the shared libraries it links and the Lua modules its scripts use, and apt can install it", function()
		local _, depends = sh("dpkg-deb -f " .. deb .. " Depends")
		for _, pkg in ipairs { "libluajit%-5%.1%-2", "libprotobuf%-c1", "libaio1", "libedit2", "zlib1g",
			"libbpf1", "libc6", "lua%-argparse", "lua%-dkjson", "lua%-inspect" } do
			assert.matches(pkg, depends)
		end
		local ok, out = sh("apt-get install --simulate " .. deb)
		assert(ok, out:sub(-1500))
		assert.matches("Inst aiotk", out)
	end)

	it("runs the demo from its files, and man aiotk names every command", function()
		local ok, out = sh(root .. "/usr/bin/aiotk demo")
		assert(ok, out:sub(-1500))
		local _, names = sh(root .. "/usr/bin/aiotk --list-commands")
		local _, man = sh("MANWIDTH=200 man -l " .. root .. "/usr/share/man/man1/aiotk.1")
		local n = 0
		for name in names:gmatch("[^\n]+") do
			assert.matches("\n   " .. name:gsub("%-", "%%-") .. "\n", man)
			n = n + 1
		end
		assert.is_true(n >= 14, names)
	end)

	it("builds C programs with pkg-config and with CMake's find_package, and luajit requires it", function()
		helper.write(T .. "/geom.c", [[
#include <aiotk.h>
#include <stdio.h>
int main(void)
{
	aiotk_geom g;
	aiotk_geom_host h = { .cpus = 16, .page_size = 4096, .formula = AIOTK_FORMULA_CURRENT };
	aiotk_err err;
	if (aiotk_geom_ring(&h, 1, &g, &err))
		return 1;
	printf("%u %llu\n", g.nr, (unsigned long long)g.ring_len);
	return 0;
}
]])
		local env = string.format("PKG_CONFIG_SYSROOT_DIR=%s PKG_CONFIG_LIBDIR=%s/usr/lib/%s/pkgconfig:" ..
			"/usr/lib/%s/pkgconfig:/usr/share/pkgconfig", root, root, MULTIARCH, MULTIARCH)
		local ok, out = sh(string.format("%s; cc %s/geom.c -o %s/geom $(%s pkg-config --cflags --libs aiotk) && " ..
			"LD_LIBRARY_PATH=%s/usr/lib/%s %s/geom", "true", T, T, env, root, MULTIARCH, T))
		assert(ok, out)
		assert.are.equal("255 8192\n", out)
		assert(require("aiotk.core").mkdir(T .. "/proj"))
		helper.write(T .. "/proj/CMakeLists.txt", [[
cmake_minimum_required(VERSION 3.18)
project(geom C)
find_package(aiotk REQUIRED)
add_executable(geom ../geom.c)
target_link_libraries(geom PRIVATE aiotk::aiotk)
]])
		ok, out = sh(string.format("cmake -S %s/proj -B %s/proj/b -DCMAKE_PREFIX_PATH=%s/usr >/dev/null && " ..
			"cmake --build %s/proj/b >/dev/null && LD_LIBRARY_PATH=%s/usr/lib/%s %s/proj/b/geom",
			T, T, root, T, root, MULTIARCH, T))
		assert(ok, out)
		assert.are.equal("255 8192\n", out)
		ok, out = sh(string.format("LUA_PATH='%s/usr/share/lua/5.1/?.lua;%s/usr/share/lua/5.1/?/init.lua;;' " ..
			"LUA_CPATH='%s/usr/lib/%s/lua/5.1/?.so;;' luajit -e 'local a = require \"aiotk\" " ..
			"print(a.version, a.geometry(1).nr)'", root, root, root, MULTIARCH))
		assert(ok, out)
		assert.matches("^%d+%.%d+%.%d+\t127\n$", out)
	end)

	it("its CRIU plugin works from the package's files with real CRIU", function()
		local C = require "criu_helper"
		if not C.need(pending) then return end
		local core = require "aiotk.core"
		local img, out = T .. "/criu", T .. "/w.out"
		assert(core.mkdir(img))
		local ok, o = sh(string.format("setsid %s/usr/libexec/aiotk/aio_workload --tolerate-stop-eintr " ..
			"--ring 64:3:1:0 >%s 2>&1 </dev/null & echo $!", root, out))
		assert(ok, o)
		local pid = tonumber(o:match("%d+"))
		finally(function()
			if not helper.ended(pid) then core.kill(pid, "KILL") end
			C.gone(pid)
		end)
		assert(helper.wait_until(function() return helper.slurp(out):match("^READY") end, 5000))
		local env = "AIOTK_SCRIPTS_DIR=" .. root .. "/usr/share/aiotk/scripts"
		local function criu(args)
			return sh(string.format("%s %s %s -L %s/usr/lib/criu -v4 -o criu.log", env, C.CRIU, args, root))
		end
		ok, o = criu("dump -t " .. pid .. " -D " .. img)
		assert(ok, o .. helper.slurp(img .. "/criu.log"):sub(-1500))
		assert.matches("aiotk: process %d+: 1 AIO ring%(s%) recorded", helper.slurp(img .. "/criu.log"))
		assert(C.gone(pid))
		ok, o = criu("restore -d -D " .. img)
		assert(ok, o .. helper.slurp(img .. "/criu.log"):sub(-1500))
		assert.matches("nr_req 126 %-> 64 %(recorded at dump%)", helper.slurp(img .. "/criu.log"))
		core.kill(pid, "USR2")
		assert(helper.wait_until(function() return helper.slurp(out):match("VERIFY") end, 5000))
		assert.matches("VERIFY OK 1 rings", helper.slurp(out))
	end)
end)
