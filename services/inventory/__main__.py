from services.inventory.main import main
from shared.runtime import run

run(main)
