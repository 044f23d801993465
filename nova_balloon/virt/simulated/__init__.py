"""A simulated compute node that runs the real controller on VM memory traces.

The model is the one of the control-quality benchmark
(``control-quality.md``): guests' demand comes from a trace, balloons move at
a bounded rate and stall where the guest uses the memory, statistics refresh
on their period and are stale in between. The simulated hypervisor implements
the same ``Driver`` interface as the libvirt one, so the controller, the
safety rules and the policies run unchanged against it.

``trace`` reads the traces, ``hypervisor`` is the driver and its clock,
``metrics`` turns a run into the benchmark's figures and ``run`` drives the
controller through a scenario. numpy is needed here, nowhere else.
"""
