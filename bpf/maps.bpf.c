// SPDX-License-Identifier: GPL-2.0
/*
 * The maps more than one unit uses, defined once; bpf/dt.h and bpf/cause.h declare them.
 * Linked first: libbpf 1.1's linker (Debian 12's bpftool 7.1) leaves a map it first saw as
 * `extern` at offset 0 of the object's .maps BTF when a later unit defines it, and the
 * loader then rejects every reference to it (libbpf error 4005, relocation).
 */
#include "dt.h"
#include "cause.h"

struct dt_events_map events SEC(".maps");
struct dt_stats_map stats SEC(".maps");
struct dt_config_map_def dt_config_map SEC(".maps");
struct dt_recorder_map recorder SEC(".maps");
struct dt_rec_head_map rec_head SEC(".maps");
struct dt_flows_map flows SEC(".maps");
struct dt_last_flow_map last_flow SEC(".maps");
struct dt_rp_hint_map rp_hint SEC(".maps");
struct dt_nf_pending_map nf_pending SEC(".maps");
