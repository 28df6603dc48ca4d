#!/bin/sh
# Builds the Debian package vncauthproxy_VERSION_amd64.deb around an
# executable, normally dist/vncauthproxy from "deno task compile":
#
#   install/build-deb.sh VERSION BINARY [OUTDIR]
#
# Build BINARY with "deno task compile", not a bare "deno compile main.ts": the
# task also embeds src/auth/crypt_worker.ts (--include), without which every
# control password check fails.
#
# OUTDIR defaults to the current directory. No debhelper: the files of this
# folder are staged as they are installed and packed with dpkg-deb. Set
# SOURCE_DATE_EPOCH for a reproducible build, MAINTAINER for the Maintainer field.
set -eu

usage() {
	echo "usage: $0 VERSION BINARY [OUTDIR]" >&2
	exit 2
}
if [ $# -lt 2 ] || [ $# -gt 3 ]; then usage; fi
version=$1
binary=$2
outdir=${3:-.}
case $version in
[0-9]*) ;;
*) echo "$0: VERSION must start with a digit: \"$version\"" >&2 && exit 2 ;;
esac
if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then
	echo "$0: BINARY is not an executable file: \"$binary\"" >&2
	exit 2
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
install -D -m 0755 "$binary" "$stage/usr/bin/vncauthproxy"
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
	cat <<'COPYRIGHT'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: vncauthproxy
Comment: /usr/bin/vncauthproxy is built with "deno compile" and embeds the
 Deno runtime (MIT, Copyright 2018-2026 the Deno authors), which includes V8
 (BSD-3-Clause) and Rust crates under the MIT, Apache-2.0 and BSD licenses.

Files: *
Copyright: 2026 vncauthproxy developers
License: MIT

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
cat <<CHANGELOG | gzip -9n >"$doc/$changelog"
$package ($version) unstable; urgency=medium

  * Built by install/build-deb.sh.

 -- $maintainer  $date
CHANGELOG
install -D -m 0644 "$here/lintian-overrides" "$stage/usr/share/lintian/overrides/$package"

# Shared library dependencies of a real (ELF) executable; a script has none.
depends=adduser
if [ "$(head -c 4 "$binary" | od -An -c | tr -d ' ')" = '177ELF' ]; then
	shlibs=
	if command -v dpkg-shlibdeps >/dev/null; then
		work=$(mktemp -d)
		mkdir "$work/debian"
		printf 'Source: %s\n\nPackage: %s\nArchitecture: amd64\n' "$package" "$package" \
			>"$work/debian/control"
		shlibs=$(cd "$work" && dpkg-shlibdeps -O "$stage/usr/bin/vncauthproxy" 2>/dev/null |
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
CONTROL
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
	xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles" "$stage/DEBIAN/md5sums"

mkdir -p "$outdir"
deb="$outdir/${package}_${version}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
