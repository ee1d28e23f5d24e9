# Shared set-up of the tools/ commands (sourced, not run): installs what is
# missing from Debian's packages, builds and installs pool_health, and runs
# PostgreSQL as an unprivileged OS user (PostgreSQL refuses to run as root).
#
# Environment:
#   PG_CONFIG   the PostgreSQL to build against and test on
#               (default: Debian 12's PostgreSQL 15)
#   PH_RUN_USER the OS user that runs the servers when called as root
#               (default: postgres, created if missing)
set -euo pipefail

PH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PH_DEFAULT_PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
export PG_CONFIG=${PG_CONFIG:-$PH_DEFAULT_PG_CONFIG}

ph_log() { printf '\n==> %s\n' "$*"; }

ph_as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# ph_need_packages PKG...: apt-get install the packages not installed yet.
ph_need_packages() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	ph_log "installing Debian packages: ${missing[*]}"
	ph_as_root apt-get update -q
	ph_as_root env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# Packages every command needs: a compiler, and PostgreSQL 15 with its
# server headers unless PG_CONFIG names another build.
ph_base_packages() {
	ph_need_packages make gcc libc6-dev perl libipc-run-perl libkrb5-dev \
		pkg-config libmicrohttpd-dev
	if [ "$PG_CONFIG" = "$PH_DEFAULT_PG_CONFIG" ]; then
		ph_need_packages postgresql-15 postgresql-server-dev-15
	fi
	[ -x "$PG_CONFIG" ] || { echo "no pg_config at $PG_CONFIG" >&2; exit 1; }
}

# The OS user that runs PostgreSQL: ourselves, or an unprivileged one.
ph_run_user() {
	if [ "$(id -u)" != 0 ]; then id -un; return; fi
	local u=${PH_RUN_USER:-postgres}
	id "$u" >/dev/null 2>&1 || useradd --system --user-group --create-home "$u"
	echo "$u"
}

# ph_run CMD...: run a command as the run user, with the server's bin first
# on PATH.
ph_run() {
	local bindir
	bindir=$("$PG_CONFIG" --bindir)
	if [ "$(id -u)" = 0 ]; then
		runuser -u "$(ph_run_user)" -- env PATH="$bindir:$PATH" PG_CONFIG="$PG_CONFIG" "$@"
	else
		env PATH="$bindir:$PATH" "$@"
	fi
}

# Build with warnings as errors, and install into PG_CONFIG's directories.
ph_build_install() {
	ph_log "building pool_health against $("$PG_CONFIG" --version)"
	make -s -C "$PH_ROOT" PG_CONFIG="$PG_CONFIG" with_llvm=no PH_WERROR=1 clean >/dev/null
	make -s -C "$PH_ROOT" PG_CONFIG="$PG_CONFIG" with_llvm=no PH_WERROR=1
	if [ -w "$("$PG_CONFIG" --pkglibdir)" ] && [ -w "$("$PG_CONFIG" --sharedir)/extension" ]; then
		make -s -C "$PH_ROOT" PG_CONFIG="$PG_CONFIG" with_llvm=no install
	else
		ph_as_root make -s -C "$PH_ROOT" PG_CONFIG="$PG_CONFIG" with_llvm=no install
	fi
}

# A scratch copy of the source tree owned by the run user (tests write
# their results and throwaway clusters beside the sources).
ph_scratch_copy() {
	local dir
	dir=$(mktemp -d "${TMPDIR:-/tmp}/pool_health.XXXXXX")
	tar -C "$PH_ROOT" --exclude=.git --exclude='*.o' --exclude='*.bc' \
		--exclude=results --exclude='tmp_check*' --exclude='output_*' -cf - . |
		tar -C "$dir" -xf -
	[ "$(id -u)" = 0 ] && chown -R "$(ph_run_user)" "$dir"
	echo "$dir"
}

# ph_fetch_source PACKAGE DIR: download Debian's source package PACKAGE
# (from bookworm, trixie or sid, through a private deb-src list: the
# machine's own apt configuration is left alone) into DIR; prints the path
# of its upstream tarball.
ph_fetch_source() {
	local apt_dir=${PH_APT_CACHE:-/var/cache/pool_health-apt} mirror
	ph_need_packages dpkg-dev curl
	mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
	[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
	[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
	local opts=(-o Dir::Etc::sourcelist="$apt_dir/sources.list" -o Dir::Etc::sourceparts=-
		-o Dir::State::Lists="$apt_dir/lists" -o APT::Get::List-Cleanup=0 -o Debug::NoLocking=1)
	if [ ! -f "$apt_dir/sources.list" ]; then
		ph_as_root mkdir -p "$apt_dir/lists/partial"
		printf 'deb-src [trusted=yes] %s %s main\n' "$mirror" bookworm "$mirror" trixie "$mirror" sid |
			ph_as_root tee "$apt_dir/sources.list" >/dev/null
		ph_as_root apt-get "${opts[@]}" update >/dev/null 2>&1
	fi
	mkdir -p "$2"
	if ! (cd "$2" && apt-get "${opts[@]}" source --download-only "$1" >/dev/null 2>&1); then
		# a mirror can lag its own index: fetch the upstream tarball of the
		# indexed release, or of the newest earlier one the pool still has
		local version upstream last ext
		version=$(apt-cache "${opts[@]}" showsrc "$1" 2>/dev/null |
			awk '/^Version:/ {print $2}' | sort -V | tail -n 1)
		upstream=${version#*:}
		upstream=${upstream%-*}
		while [ -n "$upstream" ]; do
			for ext in bz2 xz gz; do
				if curl -fsS -o "$2/${1}_$upstream.orig.tar.$ext" \
					"$mirror/pool/main/${1:0:1}/$1/${1}_$upstream.orig.tar.$ext" 2>/dev/null; then
					echo "fetched $1 $upstream from the pool (the index names $version)" >&2
					ls "$2"/*.orig.tar.* | head -n 1
					return 0
				fi
				rm -f "$2/${1}_$upstream.orig.tar.$ext"
			done
			last=${upstream##*.}
			case $last in '' | *[!0-9]* | 0) break ;; esac
			upstream=${upstream%.*}.$((last - 1))
		done
		echo "cannot fetch the source package $1" >&2
		return 1
	fi
	ls "$2"/*.orig.tar.* | head -n 1
}
