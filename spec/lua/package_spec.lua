-- A build for /usr, made as a user would (cmake with prefix /usr) in a
-- scratch directory, checked two ways. Packaged (cpack -G DEB): its
-- contents, Depends and prerm (the kernel view's pins removed), apt can
-- install it, and from its files aiotk runs the demo, man aiotk names
-- every command, a C program builds with pkg-config, a CMake project with
-- find_package(aiotk), plain luajit can require "aiotk", and real CRIU
-- loads its plugin; the package is unpacked
-- into a directory (dpkg-deb -x), not installed: the machine is left as it
-- was. Installed elsewhere (cmake --install --prefix) and that tree moved:
-- pkg-config and find_package lead the same C and CMake programs to the
-- moved files.
local helper = require "helper"
local sh = helper.sh

local SRC = os.getenv("PWD")
local MULTIARCH = (select(2, sh("dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch"))):match("[%w_-]+")

-- The programs every install is checked with: geom.c asks libaiotk for a
-- ring's geometry (GEOM_OUT), proj/ builds it through find_package(aiotk).
local GEOM_OUT = "255 8192\n"
local function write_samples(dir)
	assert(require("aiotk.core").mkdir(dir))
	helper.write(dir .. "/geom.c", [[
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
	assert(require("aiotk.core").mkdir(dir .. "/proj"))
	helper.write(dir .. "/proj/CMakeLists.txt", [[
cmake_minimum_required(VERSION 3.18)
project(geom C)
find_package(aiotk REQUIRED)
add_executable(geom ../geom.c)
target_link_libraries(geom PRIVATE aiotk::aiotk)
]])
end
-- Each builds and runs a sample, the run prefixed with run_env (where the
-- library is); pkg_env is pkg-config's, prefix find_package's.
local function build_with_pkgconfig(dir, pkg_env, run_env)
	return sh(string.format("cc %s/geom.c -o %s/geom $(%s pkg-config --cflags --libs aiotk) && %s %s/geom",
		dir, dir, pkg_env, run_env, dir))
end
local function build_with_cmake(dir, prefix, run_env)
	return sh(string.format("cmake -S %s/proj -B %s/proj/b -DCMAKE_PREFIX_PATH=%s >/dev/null && " ..
		"cmake --build %s/proj/b >/dev/null && %s %s/proj/b/geom", dir, dir, prefix, dir, run_env, dir))
end

describe("a build for /usr", function()
	local T
	setup(function()
		T = helper.tmpdir()
		local ok, out = sh(string.format("cmake -S %s -B %s/b -DCMAKE_INSTALL_PREFIX=/usr >/dev/null && " ..
			"cmake --build %s/b -j2 >/dev/null", SRC, T, T))
		assert(ok, "building: " .. out:sub(-2000))
	end)
	teardown(function() if T then helper.rmdir(T) end end)

	describe("packaged as a Debian package", function()
		local deb, root
		setup(function()
			local ok, out = sh("cd " .. T .. "/b && cpack -G DEB")
			assert(ok, "building the package: " .. out:sub(-2000))
			deb = out:match("package: (%S+%.deb) generated") or (select(2, sh("ls " .. T .. "/b/*.deb")):match("%S+"))
			assert(deb and deb:match("%.deb$"), "no .deb: " .. out:sub(-500))
			root = T .. "/root"
			assert(sh("dpkg-deb -x " .. deb .. " " .. root))
			write_samples(T .. "/deb")
		end)
		it("holds the program, scripts, library, pkg-config, CMake package, headers, man page, completion and the CRIU plugin", function()
			local _, list = sh("dpkg-deb -c " .. deb)
			for _, path in ipairs {
				"./usr/bin/aiotk", "./usr/bin/aiotk-criu-hook", "./usr/lib/criu/aiotk_criu.so",
				"./usr/lib/criu/aiotk/aiotk_criu_lua.so",
				"./usr/lib/" .. MULTIARCH .. "/libaiotk.so.0", "./usr/lib/" .. MULTIARCH .. "/pkgconfig/aiotk.pc",
				"./usr/lib/" .. MULTIARCH .. "/cmake/aiotk/aiotkConfig.cmake", "./usr/include/aiotk.h",
				"./usr/share/man/man1/aiotk.1", "./usr/share/bash-completion/completions/aiotk",
				"./usr/share/lua/5.1/aiotk/init.lua", "./usr/lib/" .. MULTIARCH .. "/lua/5.1/aiotk/core.so",
				"./usr/lib/" .. MULTIARCH .. "/aiotk/readline.so",
				"./usr/libexec/aiotk/aio_workload", "./usr/share/aiotk/scripts/show.lua",
				"./usr/share/aiotk/scripts/examples/commands/ring-report.lua",
			} do
				assert.is_truthy(list:find(path, 1, true), path .. " is not in the package")
			end
		end)

		it("removes the kernel view's pins when it is removed: its prerm runs aiotk kview --unpin --all", function()
			local ctl = T .. "/control"
			assert(sh("dpkg-deb -e " .. deb .. " " .. ctl))
			local ok, out = sh("test -x " .. ctl .. "/prerm && sh -n " .. ctl .. "/prerm && cat " .. ctl .. "/prerm")
			assert(ok, out)
			assert.matches("/usr/bin/aiotk %-q kview %-%-unpin %-%-all", out)
			-- that command, from the package's files, on a bpffs of this
			-- test's own: a pin made there is gone after it
			local bpffs = helper.tmpdir()
			finally(function()
				sh("umount " .. bpffs)
				sh("rmdir " .. bpffs)
			end)
			local aiotk = "AIOTK_KVIEW_PIN=" .. bpffs .. " " .. root .. "/usr/bin/aiotk"
			ok, out = sh(aiotk .. " kview --json")
			assert(ok, out)
			assert.matches('"pinned":true', out)
			ok, out = sh(aiotk .. " -q kview --unpin --all && ls " .. bpffs)
			assert(ok, out)
			assert.is_nil(out:match("aiotk%-"), out)
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

		it("runs the demo and the REPL from its files, and man aiotk names every command", function()
			local ok, out = sh(root .. "/usr/bin/aiotk demo")
			assert(ok, out:sub(-1500))
			-- the REPL's line editing is a module of its own, found from the program
			ok, out = sh("printf 'aiotk.geometry(1).nr\\n' | HOME=" .. root .. " " .. root .. "/usr/bin/aiotk repl 2>&1")
			assert(ok, out)
			assert.matches("\n127\n", out)
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
			local ld = string.format("LD_LIBRARY_PATH=%s/usr/lib/%s", root, MULTIARCH)
			local ok, out = build_with_pkgconfig(T .. "/deb", string.format("PKG_CONFIG_SYSROOT_DIR=%s " ..
				"PKG_CONFIG_LIBDIR=%s/usr/lib/%s/pkgconfig:/usr/lib/%s/pkgconfig:/usr/share/pkgconfig",
				root, root, MULTIARCH, MULTIARCH), ld)
			assert(ok, out)
			assert.are.equal(GEOM_OUT, out)
			ok, out = build_with_cmake(T .. "/deb", root .. "/usr", ld)
			assert(ok, out)
			assert.are.equal(GEOM_OUT, out)
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
			local log = helper.slurp(img .. "/criu.log")
			assert.matches("aiotk: process %d+: 1 AIO ring%(s%) recorded", log)
			assert.matches("aiotk: pid %d+ ring 0x%x+: nr_req 126 %-> 64 %(recorded at dump%)", log)
			assert(C.gone(pid))
			ok, o = criu("restore -d -D " .. img)
			assert(ok, o .. helper.slurp(img .. "/criu.log"):sub(-1500))
			assert.matches("aiotk: 1 AIO ring%(s%) fitted to this host at dump", helper.slurp(img .. "/criu.log"))
			core.kill(pid, "USR2")
			assert(helper.wait_until(function() return helper.slurp(out):match("VERIFY") end, 5000))
			assert.matches("VERIFY OK 1 rings", helper.slurp(out))
		end)
	end)

	describe("installed elsewhere with cmake --install --prefix, and that tree moved", function()
		local moved, pkg_env, ld
		setup(function()
			local ok, out = sh(string.format("cmake --install %s/b --prefix %s/inst >/dev/null && mv %s/inst %s/moved",
				T, T, T, T))
			assert(ok, out)
			moved = (select(2, sh("realpath " .. T .. "/moved"))):match("[^\n]+")
			pkg_env = string.format("PKG_CONFIG_PATH=%s/lib/%s/pkgconfig", moved, MULTIARCH)
			ld = string.format("LD_LIBRARY_PATH=%s/lib/%s", moved, MULTIARCH)
			write_samples(T .. "/moved-samples")
		end)

		it("pkg-config names the moved tree's directories, with and without pkgconf's --define-prefix", function()
			for _, flag in ipairs { "", "--define-prefix" } do
				for var, dir in pairs { libdir = "/lib/" .. MULTIARCH, includedir = "/include" } do
					local ok, out = sh(string.format("realpath -e $(%s pkg-config %s --variable=%s aiotk)",
						pkg_env, flag, var))
					assert(ok, out)
					assert.are.equal(moved .. dir .. "\n", out, var .. " " .. flag)
				end
			end
			local _, prefix = sh(string.format("realpath -e $(%s pkg-config --variable=prefix aiotk)", pkg_env))
			assert.are.equal(moved .. "\n", prefix)
		end)

		it("builds the C program with pkg-config and the CMake project with find_package against the moved files", function()
			local ok, out = build_with_pkgconfig(T .. "/moved-samples", pkg_env, ld)
			assert(ok, out)
			assert.are.equal(GEOM_OUT, out)
			ok, out = build_with_cmake(T .. "/moved-samples", moved, ld)
			assert(ok, out)
			assert.are.equal(GEOM_OUT, out)
		end)

		it("its CMake package, version file included, names no absolute path", function()
			local dir = moved .. "/lib/" .. MULTIARCH .. "/cmake/aiotk"
			for _, f in ipairs { "aiotkConfig.cmake", "aiotkConfigVersion.cmake", "aiotkTargets.cmake" } do
				assert.are_not.equal("", helper.slurp(dir .. "/" .. f), f .. " is not installed")
			end
			-- What a target carries (IMPORTED_LOCATION, INTERFACE_*): CMake's
			-- own guard for /lib -> /usr/lib names the configured prefix, and
			-- uses it only where the file really is there.
			local _, files = sh("ls " .. dir)
			local seen = 0
			for f in files:gmatch("%S+") do
				for name, value in helper.slurp(dir .. "/" .. f):gmatch('\n%s*([A-Z_]+) "([^"]*)"') do
					for item in value:gmatch("[^;]+") do
						local path = item:gsub("^%$<LINK_ONLY:", "")
						assert.is_nil(path:match("^%-?L?/"), f .. ": " .. name .. " " .. item)
					end
					seen = seen + 1
				end
			end
			assert.is_true(seen >= 2, files)
		end)
	end)
end)
