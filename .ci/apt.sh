# Sourced by the .ci/*-tools.sh scripts: `apt_install WHO PACKAGE...` installs Debian packages
# that are missing, without letting their init scripts start a service on this machine
# (policy-rc.d): the checks start the servers they need themselves.
apt_install() {
    local who=$1; shift
    [ $# -gt 0 ] || return 0
    echo "$who: apt-get install $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    local made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "$@" >/dev/null
    [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
}
