#!/bin/sh
# "deno task package": builds the .deb the best way this machine allows, and
# says which kind it built and why.
#
#   install/package.sh [--kind=auto|compiled|runtime] [--outdir=DIR] [VERSION]
#
# compiled  "deno task compile" makes dist/vncauthproxy, one executable, and
#           install/build-deb.sh packs it. The first choice: "auto" takes it
#           whenever the compile works, i.e. DENORT_BIN names a denort or
#           "deno compile" can download (or has cached) the denort of its
#           version. With DENORT_BIN set, a failed compile is an error.
# runtime   otherwise: the Deno runtime of the version pinned in .ci/run (the
#           deno executable of the npm package @deno/linux-x64-glibc, or
#           DENO_RUNTIME) and the program bundled by that runtime's
#           "deno bundle" into vncauthproxy.js and crypt_worker.js.
#
# A compiled binary counts only if it runs as vncauthproxy: "deno compile"
# with DENORT_BIN pointing at deno itself succeeds, but its output is the deno
# CLI, not the program.
#
# VERSION defaults to 0.0.0+gitYYYYMMDD.COMMIT; DIR to dist. The .deb's path
# and kind are the last line of the output.
set -eu

usage() {
	echo "usage: $0 [--kind=auto|compiled|runtime] [--outdir=DIR] [VERSION]" >&2
	exit 2
}
kind=auto
outdir=dist
version=
for arg in "$@"; do
	case $arg in
	--kind=auto | --kind=compiled | --kind=runtime) kind=${arg#--kind=} ;;
	--outdir=?*) outdir=${arg#--outdir=} ;;
	-*) usage ;;
	*) if [ -n "$version" ]; then usage; else version=$arg; fi ;;
	esac
done

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
say() { echo "package: $*" >&2; }
export NO_COLOR=1 DENO_NO_UPDATE_CHECK=1
if [ -z "$version" ]; then
	commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
	version=0.0.0+git$(date -u +%Y%m%d).$commit
fi
deno_version=$(sed -n 's/^DENO_VERSION=\([0-9][^ ]*\)$/\1/p' .ci/run)
if [ -z "$deno_version" ]; then
	echo "$0: no DENO_VERSION= line in .ci/run" >&2
	exit 1
fi
mkdir -p "$outdir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

# Compiled: the task's own output, kept only if it runs as vncauthproxy.
# Sets $why when it cannot be built.
compile() {
	log=$outdir/deno-compile.log
	say "deno task compile (log: $log)"
	if ! deno task compile >"$log" 2>&1; then
		# The innermost cause, e.g. "failed to lookup address information".
		why=$(sed -n '/^Caused by:/,/^$/s/^ *[0-9][0-9]*: //p' "$log" | tail -n 1)
		why="deno compile failed: ${why:-$(grep -m 1 '^error: ' "$log" || echo "see $log")}"
		return 1
	fi
	usage_line=$(timeout 30 dist/vncauthproxy --help 2>/dev/null | head -n 1) || true
	case $usage_line in
	"Usage: vncauthproxy "*) return 0 ;;
	esac
	why="dist/vncauthproxy from deno compile does not run as vncauthproxy (DENORT_BIN=${DENORT_BIN:-} is not a denort?)"
	return 1
}

# Runtime: $runtime, the deno executable of the pinned version, and $origin.
find_runtime() {
	package=@deno/linux-x64-glibc@$deno_version
	if [ -n "${DENO_RUNTIME:-}" ]; then
		runtime=$DENO_RUNTIME
		origin="DENO_RUNTIME=$DENO_RUNTIME"
	elif command -v npm >/dev/null &&
		(cd "$work" && npm pack --silent --prefer-offline "$package" >/dev/null 2>&1) &&
		tar -xzf "$work"/deno-linux-x64-glibc-*.tgz -C "$work" package/deno; then
		runtime=$work/package/deno
		origin="the npm package $package"
	elif command -v deno >/dev/null; then
		runtime=$(readlink -f "$(command -v deno)")
		origin="this machine's deno ($runtime; the npm package $package could not be fetched)"
	else
		echo "$0: no Deno runtime: set DENO_RUNTIME, or let npm fetch $package" >&2
		exit 1
	fi
	found=$("$runtime" --version 2>/dev/null | sed -n '1s/^deno \([^ ]*\) .*/\1/p') || true
	if [ "$found" != "$deno_version" ]; then
		echo "$0: $runtime is deno \"$found\", not $deno_version (.ci/run's DENO_VERSION)" >&2
		exit 1
	fi
}

# The program as two modules: main.ts and the crypt Worker's module, which
# the bundle of main.ts loads as new URL("./crypt_worker.ts", import.meta.url)
# ("deno bundle" does not follow a Worker). That URL is pointed at the
# bundled crypt_worker.js, and no module may import anything but node:.
bundle() {
	mkdir "$work/bundle"
	"$runtime" bundle --quiet --check --platform=deno -o "$work/bundle/vncauthproxy.js" main.ts
	"$runtime" bundle --quiet --check --platform=deno -o "$work/bundle/crypt_worker.js" \
		src/auth/crypt_worker.ts
	worker='new URL("./crypt_worker.ts", import.meta.url)'
	if [ "$(grep -c -F "$worker" "$work/bundle/vncauthproxy.js")" != 1 ]; then
		echo "$0: the bundle does not load its Worker as $worker exactly once" >&2
		exit 1
	fi
	sed -i 's|new URL("\./crypt_worker\.ts", import\.meta\.url)|new URL("./crypt_worker.js", import.meta.url)|' \
		"$work/bundle/vncauthproxy.js"
	for module in "$work"/bundle/*.js; do
		imports=$("$runtime" info --json --no-config --no-lock "$module" |
			sed -n 's/^ *"specifier": "\(.*\)",\{0,1\}$/\1/p' |
			grep -v -x -e 'node:.*' -e "file://$module") || true
		if [ -n "$imports" ]; then
			echo "$0: $module imports more than node: built-ins:" "$imports" >&2
			exit 1
		fi
	done
}

case $kind in
compiled)
	if ! compile; then
		echo "$0: $why" >&2
		exit 1
	fi
	because="--kind=compiled"
	;;
runtime)
	because="--kind=runtime"
	;;
auto)
	if compile; then
		kind=compiled
		because="deno compile works here"
	elif [ -n "${DENORT_BIN:-}" ]; then
		echo "$0: $why; unset DENORT_BIN to build the runtime kind" >&2
		exit 1
	else
		say "no compiled binary: $why"
		kind=runtime
		because="no denort here, $why"
	fi
	;;
esac

if [ "$kind" = compiled ]; then
	deb=$(install/build-deb.sh "$version" dist/vncauthproxy "$outdir")
	echo "Built the compiled kind ($because): $deb"
else
	find_runtime
	say "runtime: Deno $deno_version from $origin"
	bundle
	deb=$(install/build-deb.sh --runtime="$runtime" "$version" "$work/bundle" "$outdir")
	echo "Built the runtime kind (Deno $deno_version from $origin; $because): $deb"
fi
