"""ltrr's built-in components, registered through entry points like any plugin.

Each module is a worked example of the plugin API: a component class and an
``ltrr_components`` hook implementation returning it.
"""
