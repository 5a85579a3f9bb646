//! Bad configs as string fixtures, each with the exact error it must produce.
//! The file is always `/etc/systemd/distribute/web.socket`, the config name `web`.

use std::path::Path;

use distribute_config::parse_str;

const PATH: &str = "/etc/systemd/distribute/web.socket";

/// `(config text, expected error)`.
const CASES: &[(&str, &str)] = &[
    (
        "ListenStream=80\n",
        "/etc/systemd/distribute/web.socket:1: ListenStream=80: assignment outside of a section: put it under [Socket] or [Service]",
    ),
    (
        "[Socket]\nListenStream 80\n",
        "/etc/systemd/distribute/web.socket:2: missing \"=\" in \"ListenStream 80\": expected Key=Value",
    ),
    (
        "[Socket]\n=80\n",
        "/etc/systemd/distribute/web.socket:2: missing key before \"=\" in \"=80\"",
    ),
    (
        "[Socket\nListenStream=80\n",
        "/etc/systemd/distribute/web.socket:1: invalid section header \"[Socket\": expected [Socket], [Service], [Unit] or [Install]",
    ),
    (
        "[Unit]\nDescription=web\nRequires=network.target\nConditionHost=web1\n",
        "/etc/systemd/distribute/web.socket:4: ConditionHost=web1: ConditionHost= is not supported: conditions are not checked here, systemd-distribute serves every valid config; to have systemd check it before each instance starts, put it in the instances' [Unit] (a drop-in /etc/systemd/system/web@.service.d/*.conf)",
    ),
    (
        "[Unit]\nDescrption=web\n",
        "/etc/systemd/distribute/web.socket:2: Descrption=web: unknown key \"Descrption\" in [Unit]; Description= and Documentation= are used, ordering and dependency keys (After=, Wants=, …) are ignored",
    ),
    (
        "[Unit]\nDocumentation=man:web(8) /usr/share/doc/web\n",
        "/etc/systemd/distribute/web.socket:2: Documentation=man:web(8) /usr/share/doc/web: \"/usr/share/doc/web\" is not a documentation URI: use http://, https://, file:/, info: or man:",
    ),
    (
        "[Socket]\nListenStream=80\n[Install]\nWantedBy=sockets.target\nWantedBy=multi-user.target\nAlso=web.service\nRequiredBy=x\nInstallIn=y\n",
        "/etc/systemd/distribute/web.socket:8: InstallIn=y: unknown key \"InstallIn\" in [Install]; valid keys: WantedBy, RequiredBy, UpheldBy, Also, Alias, DefaultInstance (all ignored)",
    ),
    (
        "[service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:1: unknown section [service]: did you mean [Service]? (names are case-sensitive)",
    ),
    (
        "[Sockets]\n",
        "/etc/systemd/distribute/web.socket:1: unknown section [Sockets]: valid sections are [Unit], [Socket], [Service] and [Install]",
    ),
    (
        "[Socket]\nListenStream=80\u{1b}[0m\n",
        "/etc/systemd/distribute/web.socket:2: line contains the control character U+001B",
    ),
    (
        "",
        "/etc/systemd/distribute/web.socket: missing ListenStream= or ListenDatagram= in [Socket]: nothing to listen on",
    ),
    (
        "# nothing\n",
        "/etc/systemd/distribute/web.socket: missing ListenStream= or ListenDatagram= in [Socket]: nothing to listen on",
    ),
    (
        "[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket: missing ListenStream= or ListenDatagram= in [Socket]: nothing to listen on",
    ),
    // Without [Service] the config is valid (template mode); with one, it must run something.
    (
        "[Socket]\nListenStream=80\n[Service]\nUser=web\n",
        "/etc/systemd/distribute/web.socket: missing ExecStart= in [Service]: nothing to run",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\n[Socket]\nListenStream=\n",
        "/etc/systemd/distribute/web.socket: missing ListenStream= or ListenDatagram= in [Socket]: nothing to listen on",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\n[Service]\nExecStart=\n",
        "/etc/systemd/distribute/web.socket: missing ExecStart= in [Service]: nothing to run",
    ),
    (
        "[Socket]\nListenStream=80\nListenStream=0\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: ListenStream=0: port \"0\" must be a number between 1 and 65535",
    ),
    (
        "[Socket]\nListenStream=80\nListenStream=65536\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: ListenStream=65536: port \"65536\" must be a number between 1 and 65535",
    ),
    (
        "[Socket]\nListenStream=80\nListenStream=127.0.0.1:http\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: ListenStream=127.0.0.1:http: port \"http\" must be a number between 1 and 65535",
    ),
    (
        "[Socket]\nListenStream=80\nListenStream=localhost:80\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: ListenStream=localhost:80: \"localhost\" is not an IPv4 address (host names are not resolved); use e.g. 127.0.0.1:8080 or [::1]:8080",
    ),
    (
        "[Socket]\nListenStream=/run/web.sock\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:2: ListenStream=/run/web.sock: no TCP or UDP listener to distribute: AF_UNIX sockets and FIFOs are bound once and shared by all instances, which only makes sense next to a ListenStream= or ListenDatagram= address; for this config use a plain systemd socket unit",
    ),
    (
        "[Socket]\nListenStream=80\nListenStream=/run/web.sock\nListenDatagram=/run/web.sock\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:4: ListenDatagram=/run/web.sock: /run/web.sock is already listed; each path may be given once",
    ),
    (
        "[Socket]\nListenStream=80\nListenStream=/run/a.sock\nListenFIFO=/run/b.fifo\nSymlinks=/run/c\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:4: ListenFIFO=/run/b.fifo: Symlinks= needs exactly one AF_UNIX socket or FIFO in the file system (as in systemd), and this is the second",
    ),
    (
        "[Socket]\nListenStream=80\nListenSequentialPacket=127.0.0.1:80\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: ListenSequentialPacket=127.0.0.1:80: ListenSequentialPacket= takes an AF_UNIX socket: an absolute path, or @NAME in the abstract namespace",
    ),
    (
        "[Socket]\nListenStream=80\nSocketProtocol=sctp\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: SocketProtocol=sctp: SocketProtocol=sctp is not supported: SCTP endpoints are not spread over SO_REUSEPORT sockets the way TCP connections are; use a plain systemd socket unit",
    ),
    (
        "[Socket]\nListenStream=80\nKeepAliveTimeSec=500ms\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: KeepAliveTimeSec=500ms: must be between 1s and 32767s (the kernel's limit)",
    ),
    (
        "[Socket]\nListenStream=80\nIPTOS=fast\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: IPTOS=fast: must be a number 0..255 or one of low-delay, throughput, reliability, low-cost",
    ),
    (
        "[Socket]\nListenStream=80\nSocketMode=0999\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: SocketMode=0999: not an access mode: use octal digits, e.g. 0660",
    ),
    (
        "[Socket]\nListenStream=80\nListenDatagram=vsock:2:53\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: ListenDatagram=vsock:2:53: AF_VSOCK sockets cannot be distributed: the kernel spreads connections over SO_REUSEPORT sockets only for TCP and UDP; use PORT, ADDR:PORT or [ADDR]:PORT",
    ),
    (
        "[Socket]\nListenStream=80\nListenStream=::1:80\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: ListenStream=::1:80: IPv6 addresses must be in brackets, followed by the port: [ADDR]:PORT, e.g. [::1]:8080",
    ),
    (
        "[Socket]\nListenStream=80\nListenStream=[::1]\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: ListenStream=[::1]: expected [IPV6]:PORT, e.g. [::1]:8080",
    ),
    (
        "[Socket]\nListenStream=80\nListenStream=[fe80::1%eth0]:80\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: ListenStream=[fe80::1%eth0]:80: IPv6 scope \"%eth0\" must be a numeric interface index; to bind to an interface by name use BindToDevice=",
    ),
    (
        "[Socket]\nListenStream=80\nListenStream=10.0.0.1\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: ListenStream=10.0.0.1: missing port: use ADDR:PORT, e.g. 127.0.0.1:8080",
    ),
    (
        "[Socket]\nListenStream=80\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: ListenStream=80: [::]:80 is already listed; each address may be given once",
    ),
    (
        "[Socket]\nListenStream=80\nDistribute=0\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: Distribute=0: must be at least 1 (valid: 1 to 1024, or \"cpus\")",
    ),
    (
        "[Socket]\nListenStream=80\nDistribute=1025\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: Distribute=1025: must be at most 1024 (valid: 1 to 1024, or \"cpus\")",
    ),
    (
        "[Socket]\nListenStream=80\nDistribute=four\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: Distribute=four: not a number (valid: 1 to 1024, or \"cpus\")",
    ),
    (
        "[Socket]\nListenStream=80\nService=web.service\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: Service=web.service: is not a template: instances are started as web@0.service, web@1.service, …; write \"web@.service\" or just \"web\"",
    ),
    (
        "[Socket]\nListenStream=80\nService=app@%i-%i.service\n",
        "/etc/systemd/distribute/web.socket:3: Service=app@%i-%i.service: has %i more than once in the instance name; use it once",
    ),
    (
        "[Socket]\nListenStream=80\nService=web@2.service\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: Service=web@2.service: names an instance; give the template, \"web@.service\", or say where the instance index goes with %i, e.g. \"web@2-%i.service\"",
    ),
    (
        "[Socket]\nListenStream=80\nService=web app\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: Service=web app: contains a space; unit names may contain only ASCII letters, digits, \":\", \"_\", \".\", \"-\" and \"\\\"",
    ),
    (
        "[Socket]\nListenStream=80\nBacklog=-1\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: Backlog=-1: not a number: use decimal digits only",
    ),
    (
        "[Socket]\nListenStream=80\nBacklog=4294967296\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: Backlog=4294967296: too large: at most 2147483647",
    ),
    (
        "[Socket]\nListenStream=80\nBindIPv6Only=ipv4\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: BindIPv6Only=ipv4: must be default, both, ipv6-only, or a boolean",
    ),
    (
        "[Socket]\nListenStream=80\nFreeBind=maybe\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: FreeBind=maybe: not a boolean: use yes/no, true/false, on/off or 1/0",
    ),
    (
        "[Socket]\nListenStream=80\nReceiveBuffer=1X\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: ReceiveBuffer=1X: not a size: use bytes with an optional K, M, G or T suffix (base 1024), e.g. 64K",
    ),
    (
        "[Socket]\nListenStream=80\nSendBuffer=4G\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: SendBuffer=4G: too large: at most 2147483647 bytes (the kernel takes an int)",
    ),
    (
        "[Socket]\nListenStream=80\nDeferAcceptSec=5 parsecs\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: DeferAcceptSec=5 parsecs: unknown time unit \"parsecs\": use us, ms, s, min, h, d, w, M or y",
    ),
    (
        "[Socket]\nListenStream=80\nBindToDevice=a-very-long-interface-name\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: BindToDevice=a-very-long-interface-name: is too long: interface names have at most 15 characters",
    ),
    (
        "[Socket]\nListenStream=80\nFileDescriptorName=a:b\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: FileDescriptorName=a:b: contains \":\": names must be printable ASCII without \":\" (it separates names in $LISTEN_FDNAMES)",
    ),
    (
        "[Socket]\nListenStream=80\nFileDescriptorName=web-%i\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: FileDescriptorName=web-%i: %i is not available in FileDescriptorName=; use %N or a fixed name",
    ),
    (
        "[Socket]\nListenStream=80\nTriggerLimitIntervalSec=often\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: TriggerLimitIntervalSec=often: not a time span: use e.g. 5s, 100ms, 1min 30s, or infinity (a bare number is seconds)",
    ),
    (
        "[Socket]\nListenStream=80\nTriggerLimitBurst=lots\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: TriggerLimitBurst=lots: not a number: use decimal digits only",
    ),
    (
        "[Socket]\nListenStream=80\nAccept=yes\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: Accept=yes: Accept=yes is incompatible with Distribute=: each instance accepts on its own socket",
    ),
    (
        "[Socket]\nListenStream=80\nAccept=sometimes\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: Accept=sometimes: not a boolean: use yes/no, true/false, on/off or 1/0",
    ),
    (
        "[Socket]\nListenStream=80\nReusePort=no\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: ReusePort=no: ReusePort=no is impossible here: SO_REUSEPORT is how the sockets are distributed",
    ),
    (
        "[Socket]\nListenStream=80\nListenSpecial=/dev/kmsg\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: ListenSpecial=/dev/kmsg: ListenSpecial= is not supported: only ListenStream= and ListenDatagram= (TCP, UDP, AF_UNIX), ListenSequentialPacket= (AF_UNIX) and ListenFIFO= can be served; this kind of listener is for a plain systemd socket unit",
    ),
    (
        "[Socket]\nListenStream=80\nPollLimitBurst=10\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: PollLimitBurst=10: PollLimitBurst= is not supported: the activator watches a socket only while its instance is down and starts it at the first event, so there is no polling to limit; TriggerLimitIntervalSec= and TriggerLimitBurst= bound the starts",
    ),
    (
        "[Socket]\nListenStream=80\nMaxConnections=64\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: MaxConnections=64: MaxConnections= is not supported: applies only with Accept=yes, which is incompatible with Distribute=: each instance accepts on its own socket",
    ),
    (
        "[Socket]\nListenStream=80\nExecStartPre=/bin/true\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: ExecStartPre=/bin/true: ExecStartPre= is not supported: socket units' own commands are not supported; put the command in [Service] or in the instances' drop-ins",
    ),
    (
        "[Socket]\nListenStream=80\nlistenStream=81\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: listenStream=81: unknown key \"listenStream\" in [Socket]: did you mean \"ListenStream\"? (keys are case-sensitive)",
    ),
    (
        "[Socket]\nListenStream=80\nFrobnicate=yes\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: Frobnicate=yes: unknown key \"Frobnicate\" in [Socket]; valid keys: ListenStream, ListenDatagram, ListenSequentialPacket, ListenFIFO, Distribute, Service, Backlog, BindIPv6Only, FreeBind, Transparent, NoDelay, KeepAlive, ReceiveBuffer, SendBuffer, DeferAcceptSec, BindToDevice, KeepAliveTimeSec, KeepAliveIntervalSec, KeepAliveProbes, Priority, IPTOS, IPTTL, Mark, Broadcast, PassPacketInfo, Timestamping, TCPCongestion, SocketProtocol, SocketUser, SocketGroup, SocketMode, DirectoryMode, RemoveOnStop, Symlinks, PassCredentials, PassSecurity, PipeSize, FileDescriptorName, TriggerLimitIntervalSec, TriggerLimitBurst, Activation, Steering, WarmQueueDepth, DrainTimeoutSec, StuckTimeoutSec, StuckRestartSec, Accept, ReusePort, FlushPending",
    ),
    (
        "[Socket]\nListenStream=80\nUser=web\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: User=web: User= belongs in [Service], not [Socket]",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nExecStart=/usr/bin/other\n",
        "/etc/systemd/distribute/web.socket:5: ExecStart=/usr/bin/other: ExecStart= is already set; only one command is allowed (an empty ExecStart= first resets it, e.g. in a drop-in)",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nExecStart=\nExecStart=-/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:6: ExecStart=-/usr/bin/web: prefix \"-\" is not supported; start the command with the absolute path of the program",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nExecStart=\nExecStart=@/usr/bin/web web\n",
        "/etc/systemd/distribute/web.socket:6: ExecStart=@/usr/bin/web web: prefix \"@\" is not supported; start the command with the absolute path of the program",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nExecStart=\nExecStart=+/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:6: ExecStart=+/usr/bin/web: prefix \"+\" is not supported; start the command with the absolute path of the program",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nExecStart=\nExecStart=!!/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:6: ExecStart=!!/usr/bin/web: prefix \"!!\" is not supported; start the command with the absolute path of the program",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nExecStart=\nExecStart=web --port 80\n",
        "/etc/systemd/distribute/web.socket:6: ExecStart=web --port 80: \"web\" is not an absolute path; commands are not looked up in $PATH: write e.g. /usr/bin/web",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nExecStart=\nExecStart=/usr/bin/web ; /usr/bin/other\n",
        "/etc/systemd/distribute/web.socket:6: ExecStart=/usr/bin/web ; /usr/bin/other: only one command is allowed; to pass \";\" as an argument write \"\\;\"",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nExecStart=\nExecStart=/usr/bin/web \"unterminated\n",
        "/etc/systemd/distribute/web.socket:6: ExecStart=/usr/bin/web \"unterminated: unbalanced quotes: missing closing \"",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nExecStart=\nExecStart=/usr/bin/web \\q\n",
        "/etc/systemd/distribute/web.socket:6: ExecStart=/usr/bin/web \\q: invalid escape \"\\q\"",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nExecStart=\nExecStart=/usr/bin/web --id=%I\n",
        "/etc/systemd/distribute/web.socket:6: ExecStart=/usr/bin/web --id=%I: unknown specifier \"%I\": valid specifiers are %i (instance index), %N (config name) and %% (a literal %)",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nExecStart=\nExecStart=/usr/bin/../bin/web\n",
        "/etc/systemd/distribute/web.socket:6: ExecStart=/usr/bin/../bin/web: \"/usr/bin/../bin/web\" is not normalized: it contains \".\" or \"..\"",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nExecStart=\nExecStart=/usr/bin/\n",
        "/etc/systemd/distribute/web.socket:6: ExecStart=/usr/bin/: \"/usr/bin/\" is a directory, not a program",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nExecStart=\nExecStart=\"\"\n",
        "/etc/systemd/distribute/web.socket:6: ExecStart=\"\": empty command: give the absolute path of the program",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nUser=web user\n",
        "/etc/systemd/distribute/web.socket:5: User=web user: contains a space, which user and group names cannot contain",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nUser=-web\n",
        "/etc/systemd/distribute/web.socket:5: User=-web: is not a valid user or group name",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nGroup=web:staff\n",
        "/etc/systemd/distribute/web.socket:5: Group=web:staff: contains \":\", which user and group names cannot contain",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nUser=web-%u\n",
        "/etc/systemd/distribute/web.socket:5: User=web-%u: unknown specifier \"%u\": valid specifiers are %i (instance index), %N (config name) and %% (a literal %)",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nDynamicUser=perhaps\n",
        "/etc/systemd/distribute/web.socket:5: DynamicUser=perhaps: not a boolean: use yes/no, true/false, on/off or 1/0",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nEnvironment=FOO\n",
        "/etc/systemd/distribute/web.socket:5: Environment=FOO: \"FOO\" is not an assignment: write NAME=VALUE (quote it if it contains spaces: \"NAME=a b\")",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nEnvironment=1FOO=bar\n",
        "/etc/systemd/distribute/web.socket:5: Environment=1FOO=bar: \"1FOO\" is not a valid variable name: use letters, digits and \"_\", not starting with a digit",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nEnvironment=\"A=b c\" D\n",
        "/etc/systemd/distribute/web.socket:5: Environment=\"A=b c\" D: \"D\" is not an assignment: write NAME=VALUE (quote it if it contains spaces: \"NAME=a b\")",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nEnvironment=A=%p\n",
        "/etc/systemd/distribute/web.socket:5: Environment=A=%p: unknown specifier \"%p\": valid specifiers are %i (instance index), %N (config name) and %% (a literal %)",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nWorkingDirectory=srv/web\n",
        "/etc/systemd/distribute/web.socket:5: WorkingDirectory=srv/web: \"srv/web\" is not an absolute path; use an absolute path or ~",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nWorkingDirectory=-/srv/web\n",
        "/etc/systemd/distribute/web.socket:5: WorkingDirectory=-/srv/web: the \"-\" prefix is not supported: give an absolute path or ~",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nWorkingDirectory=/srv/../etc\n",
        "/etc/systemd/distribute/web.socket:5: WorkingDirectory=/srv/../etc: \"/srv/../etc\" is not normalized: it contains \".\" or \"..\"; use an absolute path or ~",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nCPUAffinity=3-1\n",
        "/etc/systemd/distribute/web.socket:5: CPUAffinity=3-1: range \"3-1\" is reversed",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nCPUAffinity=0 x\n",
        "/etc/systemd/distribute/web.socket:5: CPUAffinity=0 x: \"x\" is not a CPU index: use e.g. 0-3, \"0 2 4\" or 1,3",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nNoNewPrivileges=perhaps\n",
        "/etc/systemd/distribute/web.socket:5: NoNewPrivileges=perhaps: not a boolean: use yes/no, true/false, on/off or 1/0",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nProtectSystem=very\n",
        "/etc/systemd/distribute/web.socket:5: ProtectSystem=very: must be a boolean or one of: full, strict",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nProtectHome=hidden\n",
        "/etc/systemd/distribute/web.socket:5: ProtectHome=hidden: must be a boolean or one of: read-only, tmpfs",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nKillMode=all\n",
        "/etc/systemd/distribute/web.socket:5: KillMode=all: must be one of: control-group, mixed, process, none",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nLimitNOFILE=lots\n",
        "/etc/systemd/distribute/web.socket:5: LimitNOFILE=lots: must be a number, \"infinity\", or SOFT:HARD",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nLimitNOFILE=4096:1024\n",
        "/etc/systemd/distribute/web.socket:5: LimitNOFILE=4096:1024: the soft limit is above the hard limit",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nMemoryMax=50%\n",
        "/etc/systemd/distribute/web.socket:5: MemoryMax=50%: percentages are not supported here: use a size like 512M, or infinity",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nMemoryMax=0\n",
        "/etc/systemd/distribute/web.socket:5: MemoryMax=0: must be at least 1 byte (use infinity for no limit)",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nTimeoutStopSec=soon\n",
        "/etc/systemd/distribute/web.socket:5: TimeoutStopSec=soon: not a time span: use e.g. 5s, 100ms, 1min 30s, or infinity (a bare number is seconds)",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nNice=20\n",
        "/etc/systemd/distribute/web.socket:5: Nice=20: must be a number between -20 and 19",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nRemainAfterExit=yes\n",
        "/etc/systemd/distribute/web.socket:5: RemainAfterExit=yes: RemainAfterExit= is not allowed: an instance must become inactive when it exits, so that systemd-distribute can start it again when the next connection arrives",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nSockets=web.socket\n",
        "/etc/systemd/distribute/web.socket:5: Sockets=web.socket: Sockets= does not apply: instances get their socket from systemd-distribute",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nListenStream=81\n",
        "/etc/systemd/distribute/web.socket:5: ListenStream=81: ListenStream= belongs in [Socket], not [Service]",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nRestart=always\n",
        "/etc/systemd/distribute/web.socket:5: Restart=always: unknown or unsupported key \"Restart\" in [Service]; put it in a drop-in /etc/systemd/system/web@.service.d/*.conf, which systemd applies to every instance",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nnice=5\n",
        "/etc/systemd/distribute/web.socket:5: nice=5: unknown key \"nice\" in [Service]: did you mean \"Nice\"? (keys are case-sensitive)",
    ),
    (
        "[Socket]\nListenStream=80\nActivation=sometimes\n[Service]\nExecStart=/usr/bin/web\n",
        "/etc/systemd/distribute/web.socket:3: Activation=sometimes: must be \"on-demand\" (start an instance when its socket has something queued) or \"eager\" (start all N at once)",
    ),
    (
        "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\nType=notify\n[Socket]\nService=api@.service\n",
        "/etc/systemd/distribute/web.socket:5: Type=notify: unknown or unsupported key \"Type\" in [Service]; put it in a drop-in /etc/systemd/system/api@.service.d/*.conf, which systemd applies to every instance",
    ),
];

#[test]
fn bad_configs_give_exact_errors() {
    let mut failures = Vec::new();
    for (text, want) in CASES {
        match parse_str("web", Path::new(PATH), text) {
            Ok(spec) => failures.push(format!("{text:?}: expected an error, got {spec:?}")),
            Err(e) if e.to_string() != *want => {
                failures.push(format!("{text:?}:\n   got: {e}\n  want: {want}"))
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bad_config_names() {
    let text = "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\n";
    let cases = [
        ("web@1", "/x/web@1.socket: invalid config name \"web@1\": it must not contain \"@\" (instances are named NAME@INDEX)"),
        ("", "/x/.socket: invalid config name \"\": must not be empty"),
        ("web app", "/x/web app.socket: invalid config name \"web app\": contains a space; unit names may contain only ASCII letters, digits, \":\", \"_\", \".\", \"-\" and \"\\\""),
    ];
    for (name, want) in cases {
        let path = format!("/x/{name}.socket");
        let err = parse_str(name, Path::new(&path), text).unwrap_err();
        assert_eq!(err.to_string(), want);
        assert_eq!(err.line, None);
    }
}

/// Every per-line error carries the file, line, key and value; whole-config errors the
/// file only.
#[test]
fn error_fields() {
    let err = parse_str(
        "web",
        Path::new(PATH),
        "[Socket]\nListenStream=80\nDistribute=0\n[Service]\nExecStart=/usr/bin/web\n",
    )
    .unwrap_err();
    assert_eq!(err.file, Path::new(PATH));
    assert_eq!(err.line, Some(3));
    assert_eq!(err.key.as_deref(), Some("Distribute"));
    assert_eq!(err.value.as_deref(), Some("0"));

    let err = parse_str(
        "web",
        Path::new(PATH),
        "[Socket]\nListenStream=80\n[Service]\nUser=web\n",
    )
    .unwrap_err();
    assert_eq!(err.file, Path::new(PATH));
    assert_eq!((err.line, err.key), (None, None));
    assert_eq!(
        err.message,
        "missing ExecStart= in [Service]: nothing to run"
    );
}
