from sandbox.main import main
from shared.runtime import run

run(main)
