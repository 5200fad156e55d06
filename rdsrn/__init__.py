"""RDSRN Edge: a lightweight recursive distillation super-resolution network, trained and
shipped to edge devices.

The `rdsrn` package (model, data, training, evaluation) needs torch; the `runtimes`
package beside it does not.
"""

__version__ = "0.1.0"
