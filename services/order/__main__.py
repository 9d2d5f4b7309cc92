from services.order.main import main
from shared.runtime import run

run(main)
