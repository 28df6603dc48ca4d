#!/bin/sh
# Builds the Debian package vncauthproxy_VERSION_amd64.deb, of one of two kinds:
#
#   install/build-deb.sh VERSION BINARY [OUTDIR]
#   install/build-deb.sh --runtime=DENO VERSION BUNDLE [OUTDIR]
#
# Compiled (the first choice): BINARY is dist/vncauthproxy from "deno task
# compile", installed as /usr/bin/vncauthproxy. Build it with the task, not a
# bare "deno compile main.ts": the task also embeds src/auth/crypt_worker.ts
# (--include), without which every control password check fails.
#
# Runtime (when "deno compile" cannot run, i.e. no denort): DENO is the deno
# executable of the Deno release the program is tested on, and BUNDLE a folder
# with the program bundled into vncauthproxy.js and crypt_worker.js (the crypt
# Worker's module), as install/package.sh makes them. Both go to
# /usr/lib/vncauthproxy/, and /usr/bin/vncauthproxy is a launcher that runs
# that runtime on that module with the compile task's permissions.
#
# "deno task package" (install/package.sh) picks the kind and builds the inputs.
#
# OUTDIR defaults to the current directory. No debhelper: the files of this
# folder are staged as they are installed and packed with dpkg-deb. Set
# SOURCE_DATE_EPOCH for a reproducible build, MAINTAINER for the Maintainer field.
set -eu

usage() {
	echo "usage: $0 VERSION BINARY [OUTDIR]" >&2
	echo "       $0 --runtime=DENO VERSION BUNDLE [OUTDIR]" >&2
	exit 2
}
runtime=
case ${1:-} in
--runtime=?*) runtime=${1#--runtime=} && shift ;;
-*) usage ;;
esac
if [ $# -lt 2 ] || [ $# -gt 3 ]; then usage; fi
version=$1
program=$2
outdir=${3:-.}
case $version in
[0-9]*) ;;
*) echo "$0: VERSION must start with a digit: \"$version\"" >&2 && exit 2 ;;
esac
if [ -z "$runtime" ]; then
	kind=compiled
	if [ ! -f "$program" ] || [ ! -x "$program" ]; then
		echo "$0: BINARY is not an executable file: \"$program\"" >&2
		exit 2
	fi
else
	kind=runtime
	if [ ! -f "$runtime" ] || [ ! -x "$runtime" ]; then
		echo "$0: DENO is not an executable file: \"$runtime\"" >&2
		exit 2
	fi
	# "deno 2.9.6 (stable, release, x86_64-unknown-linux-gnu)"
	deno_version=$("$runtime" --version | sed -n '1s/^deno \([0-9][^ ]*\) .*/\1/p')
	if [ -z "$deno_version" ]; then
		echo "$0: DENO does not run as deno: \"$runtime\"" >&2
		exit 2
	fi
	for module in vncauthproxy.js crypt_worker.js; do
		if [ ! -f "$program/$module" ]; then
			echo "$0: BUNDLE has no $module: \"$program\"" >&2
			exit 2
		fi
	done
fi

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
package=vncauthproxy
maintainer=${MAINTAINER:-vncauthproxy developers <vncauthproxy@users.noreply.github.com>}
epoch=${SOURCE_DATE_EPOCH:-$(date +%s)}
export SOURCE_DATE_EPOCH="$epoch"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT INT TERM
umask 022
chmod 0755 "$stage"

# Programs.
lib=/usr/lib/$package
if [ "$kind" = compiled ]; then
	install -D -m 0755 "$program" "$stage/usr/bin/vncauthproxy"
else
	install -D -m 0755 "$runtime" "$stage$lib/deno"
	install -m 0644 "$program/vncauthproxy.js" "$program/crypt_worker.js" "$stage$lib/"
	mkdir -p "$stage/usr/bin"
	# The permissions of the compile task, the one list of them (deno.json).
	permissions=$(sed -n 's/^ *"compile": *"deno compile \(.*\)",\{0,1\}$/\1/p' "$top/deno.json" |
		tr ' ' '\n' | grep -e '^--allow-' -e '^--deny-' | tr '\n' ' ')
	if [ -z "$permissions" ]; then
		echo "$0: no permissions in the compile task of $top/deno.json" >&2
		exit 1
	fi
	cat >"$stage/usr/bin/vncauthproxy" <<LAUNCHER
#!/bin/sh
# vncauthproxy: the program, bundled into $lib/vncauthproxy.js,
# on the Deno $deno_version runtime shipped beside it, with the permissions
# "deno task compile" gives the compiled binary; no other Deno is used.
# Nothing is fetched at run time (--cached-only, no remote or npm modules),
# no deno.json, package.json or lock file is looked up, and Deno keeps no
# cache: DENO_DIR is a path nobody can create, so Deno's caches stay in
# memory and nothing is written for any user (the service's unit allows no
# cache directory anyway).
DENO_DIR=/dev/null/deno
DENO_NO_UPDATE_CHECK=1
DENO_NO_PACKAGE_JSON=1
export DENO_DIR DENO_NO_UPDATE_CHECK DENO_NO_PACKAGE_JSON
exec $lib/deno run --no-config --no-lock --no-remote --no-npm --cached-only --no-code-cache --no-prompt ${permissions}$lib/vncauthproxy.js "\$@"
LAUNCHER
	chmod 0755 "$stage/usr/bin/vncauthproxy"
fi
# snf installed the daemon as /usr/sbin/vncauthproxy: keep that path working.
install -d "$stage/usr/sbin"
ln -s ../bin/vncauthproxy "$stage/usr/sbin/vncauthproxy"
for tool in passwd client; do
	printf '#!/bin/sh\n# snf-vncauthproxy compatibility: vncauthproxy-%s with its flags.\nexec /usr/bin/vncauthproxy legacy-%s "$@"\n' \
		"$tool" "$tool" >"$stage/usr/bin/vncauthproxy-$tool"
	chmod 0755 "$stage/usr/bin/vncauthproxy-$tool"
done

# Service and configuration.
install -D -m 0644 "$here/vncauthproxy.service" "$stage/lib/systemd/system/vncauthproxy.service"
install -D -m 0644 "$here/default" "$stage/etc/default/vncauthproxy"

# Manual pages: one page for the daemon and both compatibility commands.
mkdir -p "$stage/usr/share/man/man8"
gzip -9n <"$here/vncauthproxy.8" >"$stage/usr/share/man/man8/vncauthproxy.8.gz"
for tool in passwd client; do
	ln -s vncauthproxy.8.gz "$stage/usr/share/man/man8/vncauthproxy-$tool.8.gz"
done

# Documentation: DEP-5 copyright with the text of LICENSE, and a changelog.
doc=$stage/usr/share/doc/$package
mkdir -p "$doc"
{
	echo 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/'
	echo 'Upstream-Name: vncauthproxy'
	if [ "$kind" = compiled ]; then
		cat <<'COPYRIGHT'
Comment: /usr/bin/vncauthproxy is built with "deno compile" and embeds the
 Deno runtime (MIT, Copyright 2018-2026 the Deno authors), which includes V8
 (BSD-3-Clause) and Rust crates under the MIT, Apache-2.0 and BSD licenses.
COPYRIGHT
	else
		cat <<'COPYRIGHT'
Comment: /usr/lib/vncauthproxy/deno is the Deno runtime as the Deno project
 releases it (npm package @deno/linux-x64-glibc); it includes V8
 (BSD-3-Clause) and Rust crates under the MIT, Apache-2.0 and BSD licenses.
COPYRIGHT
	fi
	cat <<'COPYRIGHT'

Files: *
Copyright: 2026 vncauthproxy developers
License: MIT
COPYRIGHT
	if [ "$kind" = runtime ]; then
		cat <<'COPYRIGHT'

Files: usr/lib/vncauthproxy/deno
Copyright: 2018-2026 the Deno authors
License: MIT
COPYRIGHT
	fi
	cat <<'COPYRIGHT'

License: MIT
COPYRIGHT
	# The license text after the copyright line, in DEP-5's indented form.
	sed -e '1,/^Copyright/d' "$top/LICENSE" | sed -e '/./,$!d' \
		-e 's/^$/./' -e 's/^/ /'
} >"$doc/copyright"
# Policy 12.7: a version with a Debian revision (1.0.0-1) names it
# changelog.Debian.gz, a native one (1.0.0) changelog.gz.
case $version in
*-*) changelog=changelog.Debian.gz ;;
*) changelog=changelog.gz ;;
esac
date=$(date -u -R -d "@$epoch")
if [ "$kind" = compiled ]; then
	built='one executable made by
    "deno compile"'
	about=' This build is one executable made by "deno compile".'
else
	built="the program bundled for the Deno
    $deno_version runtime it ships"
	about=" This build runs the bundled program on the Deno $deno_version runtime it
 ships in $lib; it needs no Deno on the host."
fi
cat <<CHANGELOG | gzip -9n >"$doc/$changelog"
$package ($version) unstable; urgency=medium

  * Built by install/build-deb.sh: $built.

 -- $maintainer  $date
CHANGELOG
# The tags that come with shipping the Deno runtime, per kind.
install -D -m 0644 "$here/lintian-overrides.$kind" "$stage/usr/share/lintian/overrides/$package"

# Shared library dependencies of the real (ELF) executable: the compiled
# binary, or the runtime beside a launcher. A script has none.
if [ "$kind" = compiled ]; then elf=$stage/usr/bin/vncauthproxy; else elf=$stage$lib/deno; fi
depends=adduser
if [ "$(head -c 4 "$elf" | od -An -c | tr -d ' ')" = '177ELF' ]; then
	shlibs=
	if command -v dpkg-shlibdeps >/dev/null; then
		work=$(mktemp -d)
		mkdir "$work/debian"
		printf 'Source: %s\n\nPackage: %s\nArchitecture: amd64\n' "$package" "$package" \
			>"$work/debian/control"
		shlibs=$(cd "$work" && dpkg-shlibdeps -O "$elf" 2>/dev/null |
			sed -n 's/^shlibs:Depends=//p') || true
		rm -rf "$work"
	fi
	# What a deno-compiled x86-64 binary has needed so far.
	depends="$depends, ${shlibs:-libc6 (>= 2.34), libgcc-s1 (>= 3.3)}"
fi

# Control area.
mkdir -p "$stage/DEBIAN"
for script in postinst prerm postrm; do
	install -m 0755 "$here/$script" "$stage/DEBIAN/$script"
done
echo /etc/default/vncauthproxy >"$stage/DEBIAN/conffiles"
size=$(du -k -s --apparent-size --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: $package
Version: $version
Architecture: amd64
Maintainer: $maintainer
Installed-Size: $size
Depends: $depends
Provides: snf-vncauthproxy
Conflicts: snf-vncauthproxy
Replaces: snf-vncauthproxy
Section: net
Priority: optional
Description: VNC authentication proxy, drop-in for snf-vncauthproxy
 vncauthproxy sets up one-time forwardings to VNC servers on request over a
 JSON control socket: a viewer reaches a VM console through a port of the
 proxy with a one-time password, and the VNC server stays on a private
 network. It speaks snf-vncauthproxy's control protocol, options and users
 file format (Synnefo, Ganeti), and serves plain VNC and WebSocket (noVNC)
 consoles.
 .
$about
CONTROL
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
	xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles" "$stage/DEBIAN/md5sums"

mkdir -p "$outdir"
deb="$outdir/${package}_${version}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
