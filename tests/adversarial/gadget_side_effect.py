"""A module whose import writes the canary (a module the file's types table does not
name, imported by a payload during a load)."""

from gadgets import touch

touch("gadget_side_effect imported")
