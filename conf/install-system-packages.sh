#!/bin/sh
# Install the Debian packages named on the command line when some are missing.
# As root: apt-get install them. Otherwise: say exactly what to install, and fail.
missing=""
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "Installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # Postfix as a package only: no main.cf, no system MTA on port 25 (tests run their own instance).
    case "$missing" in *" postfix"*)
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections ;;
    esac
    apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null || {
        echo "apt-get install$missing failed" >&2; exit 1; }
    # The packages' own services are not needed: tests start their own servers.
    exit 0
fi
echo "Missing Debian packages:$missing" >&2
echo "Install them with: sudo apt-get install$missing   (then run make again)" >&2
exit 1
