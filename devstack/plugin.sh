#!/bin/bash
#
# devstack plugin of nova-balloon: the balloon agent on compute nodes and the
# balloon:* extra spec validators for nova-api.
#
# stack install      install the package: all of it where the agent runs, only
#                    the validators where nova-api runs (nova-api loads them
#                    when it starts, later in stack.sh)
# stack post-config  write [balloon] into $NOVA_CONF: devstack copies it to
#                    $NOVA_CPU_CONF when it starts nova-compute, after this
# stack extra        start nova-balloon-agent with nova-compute's config
# unstack            stop the agent (it gives shrunk guests their memory back)
# clean              remove what the plugin installed and wrote

# Save trace setting
_XTRACE_NOVA_BALLOON=$(set +o | grep xtrace)
set -o xtrace

NOVA_BALLOON_SERVICE=nova-balloon-agent
NOVA_BALLOON_OPTIONS=(policy default_overcommit_ratio interval dry_run restore_on_stop
                      state_file flavor_policy_file)

# Whether this node runs the agent: the service is on and so is nova-compute
# with libvirt, whose guests the agent balloons.
function nova_balloon_agent_enabled {
    is_service_enabled "$NOVA_BALLOON_SERVICE" && is_service_enabled n-cpu &&
        [[ "${VIRT_DRIVER:-libvirt}" == "libvirt" ]]
}

# The agent needs libvirt-python, built from source against libvirt's headers,
# which devstack installs (install_libvirt) only on nodes that run n-cpu. The
# validators need only what Nova already brings, so an n-api node without the
# agent gets the package without its dependencies, as install.rst tells
# operators to do on their API nodes.
function install_nova_balloon {
    if nova_balloon_agent_enabled; then
        setup_develop "$NOVA_BALLOON_DIR"
    elif is_service_enabled n-api; then
        pip_install --no-deps -e "$NOVA_BALLOON_DIR"
    fi
}

# configure_nova_balloon <config file>
function configure_nova_balloon {
    local conf=$1
    iniset "$conf" balloon policy "$NOVA_BALLOON_POLICY"
    iniset "$conf" balloon default_overcommit_ratio "$NOVA_BALLOON_DEFAULT_OVERCOMMIT_RATIO"
    iniset "$conf" balloon interval "$NOVA_BALLOON_INTERVAL"
    iniset "$conf" balloon dry_run "$NOVA_BALLOON_DRY_RUN"
    iniset "$conf" balloon restore_on_stop "$NOVA_BALLOON_RESTORE_ON_STOP"
    iniset "$conf" balloon state_file "$NOVA_BALLOON_STATE_FILE"
    if [[ -n "$NOVA_BALLOON_FLAVOR_POLICY_FILE" ]]; then
        iniset "$conf" balloon flavor_policy_file "$NOVA_BALLOON_FLAVOR_POLICY_FILE"
    fi
}

function start_nova_balloon {
    mkdir -p "$NOVA_BALLOON_DATA_DIR"
    # nova-cpu.conf is a copy of nova.conf taken after post-config; a setup
    # that writes it otherwise (grenade) gets the options here.
    if [[ -z "$(iniget "$NOVA_CPU_CONF" balloon policy)" ]]; then
        echo "nova-balloon: [balloon] missing from $NOVA_CPU_CONF, writing it there"
        configure_nova_balloon "$NOVA_CPU_CONF"
    fi
    # In the libvirt group, as nova-compute, to reach qemu:///system.
    run_process "$NOVA_BALLOON_SERVICE" \
        "$(get_python_exec_prefix)/nova-balloon-agent --config-file $NOVA_CPU_CONF" \
        "$LIBVIRT_GROUP"
}

function stop_nova_balloon {
    stop_process "$NOVA_BALLOON_SERVICE"
}

function cleanup_nova_balloon {
    local conf option
    for conf in "$NOVA_CONF" "$NOVA_CPU_CONF"; do
        if [[ -f "$conf" ]]; then
            for option in "${NOVA_BALLOON_OPTIONS[@]}"; do
                inidelete "$conf" balloon "$option"
            done
        fi
    done
    rm -rf "$NOVA_BALLOON_DATA_DIR"
    pip_uninstall nova-balloon
}

if [[ "$1" == "stack" ]]; then
    case "$2" in
        install)
            echo_summary "Installing nova-balloon"
            install_nova_balloon
            ;;
        post-config)
            if nova_balloon_agent_enabled; then
                echo_summary "Configuring nova-balloon-agent"
                configure_nova_balloon "$NOVA_CONF"
            fi
            ;;
        extra)
            if nova_balloon_agent_enabled; then
                echo_summary "Starting nova-balloon-agent"
                start_nova_balloon
            fi
            ;;
    esac
elif [[ "$1" == "unstack" ]]; then
    # stop_process itself skips a service that never ran here.
    stop_nova_balloon
elif [[ "$1" == "clean" ]]; then
    cleanup_nova_balloon
fi

# Restore xtrace
$_XTRACE_NOVA_BALLOON
