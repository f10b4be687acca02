"""What ``mitmdump -s`` loads. mitmproxy executes a script by path, outside the
package, so the addon lives in the importable ``proxy_addon.addon`` and this
file only hands mitmproxy an instance."""

from proxy_addon.addon import TokentrailAddon

addons = [TokentrailAddon()]
